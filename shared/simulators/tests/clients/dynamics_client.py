"""MSAL (client credentials) + requests against the Dataverse simulator: authenticate, query, create,
update with optimistic concurrency, page. Usage: dynamics_client.py <sim base URL> <org URL>."""

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
    "If-None-Match": "null",
}

who = session.get(api + "WhoAmI", headers=headers)
check(who.status_code == 200 and who.json().get("UserId"), f"WhoAmI: {who.status_code} {who.text}")

# Create without a body: 204 + OData-EntityId.
r = session.post(api + "accounts", json={"name": "Contoso Python", "address1_postalcode": "75001"}, headers=headers)
check(r.status_code == 204, f"create account: {r.status_code} {r.text}")
entity_id = r.headers["OData-EntityId"]
account_id = entity_id[entity_id.index("(") + 1 : -1]

# Query with $select/$filter.
r = session.get(
    api + "accounts",
    params={"$select": "name,address1_postalcode", "$filter": "name eq 'Contoso Python' and address1_postalcode eq '75001'"},
    headers=headers,
)
rows = r.json()["value"]
check(r.status_code == 200 and [x["accountid"] for x in rows] == [account_id], f"query: {r.status_code} {r.text}")

# Create with return=representation and a lookup bind.
r = session.post(
    api + "opportunities?$select=opportunityid,name,estimatedvalue,statecode",
    json={
        "name": "Python deal",
        "estimatedvalue": 1000,
        "parentaccountid@odata.bind": f"/accounts({account_id})",
        "cosell_syncwithpartnercenter": True,
    },
    headers={**headers, "Prefer": "return=representation"},
)
check(r.status_code == 201, f"create opportunity: {r.status_code} {r.text}")
opp = r.json()
etag = opp["@odata.etag"]

# Update guarded by the etag, then the same stale etag is refused.
url = api + f"opportunities({opp['opportunityid']})"
r = session.patch(url, json={"estimatedvalue": 2000}, headers={**headers, "If-Match": etag})
check(r.status_code == 204, f"update: {r.status_code} {r.text}")
r = session.patch(url, json={"estimatedvalue": 3000}, headers={**headers, "If-Match": etag})
check(r.status_code == 412 and "RowVersion" in r.json()["error"]["message"], f"stale update: {r.status_code} {r.text}")

r = session.get(url + "?$select=estimatedvalue,_parentaccountid_value", headers=headers)
check(r.json()["estimatedvalue"] == 2000 and r.json()["_parentaccountid_value"] == account_id, f"read back: {r.text}")

# Server-driven paging: follow @odata.nextLink verbatim.
for i in range(5):
    session.post(api + "accounts", json={"name": f"Paged {i}"}, headers=headers).raise_for_status()
names, link = [], api + "accounts?$select=name&$filter=startswith(name,'Paged')"
while link:
    page = session.get(link, headers={**headers, "Prefer": "odata.maxpagesize=2"}).json()
    names += [x["name"] for x in page["value"]]
    link = page.get("@odata.nextLink")
check(names == [f"Paged {i}" for i in range(5)], f"paging: {names}")

print(json.dumps({"account": account_id, "opportunity": opp["opportunityid"]}))
