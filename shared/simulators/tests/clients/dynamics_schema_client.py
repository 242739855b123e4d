"""MSAL (client credentials) + requests against the Dataverse simulator: what a third-party client sees
of the connector's schema. Usage: dynamics_schema_client.py <sim base URL> <org URL>. Prints, as JSON,
whether a query naming the connector's sync flag works, the error otherwise, and the column's
definition as `EntityDefinitions(...)/Attributes(...)` answers it (with its option set for a choice)."""

import json
import sys

import msal

from routing import check, routed_session

sim_base, org = sys.argv[1], sys.argv[2].rstrip("/")
session = routed_session(sim_base, ["login.microsoftonline.com", ".dynamics.com"])
app = msal.ConfidentialClientApplication(
    "cosell-connector",
    client_credential="sim-secret",
    authority="https://login.microsoftonline.com/sim-tenant",
    http_client=session,
)
token = app.acquire_token_for_client(scopes=[org + "/.default"])
check("access_token" in token, f"no token: {token}")
api = org + "/api/data/v9.2/"
headers = {
    "Authorization": "Bearer " + token["access_token"],
    "Accept": "application/json",
    "OData-MaxVersion": "4.0",
    "OData-Version": "4.0",
}

q = session.get(api + "opportunities", params={"$select": "name,cosell_syncwithpartnercenter"}, headers=headers)
out = {"query_status": q.status_code}
if q.status_code != 200:
    out["query_error"] = q.json()["error"]["message"]

flag = session.get(
    api + "EntityDefinitions(LogicalName='opportunity')/Attributes(LogicalName='cosell_syncwithpartnercenter')",
    headers=headers,
)
out["flag_status"] = flag.status_code
if flag.status_code == 200:
    out["flag_type"] = flag.json().get("@odata.type")
help_ = session.get(
    api
    + "EntityDefinitions(LogicalName='opportunity')/Attributes(LogicalName='cosell_mshelp')"
    + "/Microsoft.Dynamics.CRM.MultiSelectPicklistAttributeMetadata",
    params={"$select": "LogicalName", "$expand": "OptionSet"},
    headers=headers,
)
if help_.status_code == 200:
    out["help_options"] = [o["Value"] for o in help_.json()["OptionSet"]["Options"]]
print(json.dumps(out))
