//! Wire-faithful local simulators (DESIGN.md §6): they speak the real protocols from `reference/` so
//! that the connector, its tests and the sandbox run without any external service.

pub mod crm_common;
pub mod dynamics;
pub mod partner_center;
pub mod salesforce;
pub mod support;
