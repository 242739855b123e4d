"""simple-salesforce against the Salesforce simulator: client-credentials and JWT-bearer login, SOQL,
create, update, upsert by external id, errors. Usage: salesforce_client.py <sim base URL> <private key PEM file>."""

import json
import sys

from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceMalformedRequest

from routing import check, routed_session

sim_base, key_file = sys.argv[1], sys.argv[2]
session = routed_session(sim_base, [".salesforce.com"])

sf = Salesforce(consumer_key="cosell-connector", consumer_secret="sim-secret", domain="cosell-sim.my", session=session)

account = sf.Account.create({"Name": "Python Co", "BillingPostalCode": "75001", "BillingCountry": "FR"})
check(account["success"] and account["id"].startswith("001"), f"account: {account}")

opp = sf.Opportunity.create(
    {
        "Name": "Python deal",
        "StageName": "Prospecting",
        "CloseDate": "2026-09-30",
        "Amount": 1000,
        "AccountId": account["id"],
        "Sync_with_Partner_Center__c": True,
    }
)
check(opp["success"] and opp["id"].startswith("006"), f"opportunity: {opp}")

result = sf.query(f"SELECT Id, Name, Amount, IsClosed FROM Opportunity WHERE AccountId = '{account['id']}'")
check(result["totalSize"] == 1 and result["records"][0]["Id"] == opp["id"], f"query: {result}")

status = sf.Opportunity.update(opp["id"], {"StageName": "Closed Won", "Amount": 2000})
check(status == 204, f"update: {status}")
got = sf.Opportunity.get(opp["id"])
check(got["IsWon"] is True and got["IsClosed"] is True and got["Amount"] == 2000, f"get: {got}")

first = sf.Opportunity.upsert(
    "Referral_Identifier__c/ref-python-1", {"Name": "Upserted", "StageName": "Prospecting", "CloseDate": "2026-10-31"}
)
again = sf.Opportunity.upsert("Referral_Identifier__c/ref-python-1", {"Name": "Upserted twice"})
check((first, again) == (201, 200), f"upsert statuses: {first}, {again}")
by_key = sf.Opportunity.get_by_custom_id("Referral_Identifier__c", "ref-python-1")
check(by_key["Name"] == "Upserted twice", f"get by external id: {by_key}")

all_rows = sf.query_all("SELECT Id FROM Opportunity WHERE Sync_with_Partner_Center__c = true OR Name LIKE 'Upserted%'")
check(all_rows["totalSize"] == 2, f"query_all: {all_rows}")

try:
    sf.Opportunity.create({"Name": "No close date", "StageName": "Prospecting"})
    check(False, "a create without CloseDate was accepted")
except SalesforceMalformedRequest as e:
    check(e.content[0]["errorCode"] == "REQUIRED_FIELD_MISSING" and e.content[0]["fields"] == ["CloseDate"], f"{e.content}")

limits = sf.limits()
check(limits["DailyApiRequests"]["Max"] > limits["DailyApiRequests"]["Remaining"], f"limits: {limits}")

with open(key_file) as f:
    jwt_sf = Salesforce(
        username="integration@cosell.example", consumer_key="cosell-connector", privatekey=f.read(), domain="login", session=session
    )
count = jwt_sf.query("SELECT COUNT() FROM Account")
check(count["totalSize"] == 1, f"JWT session query: {count}")

print(json.dumps({"account": account["id"], "opportunity": opp["id"]}))
