pub mod partner_center;
