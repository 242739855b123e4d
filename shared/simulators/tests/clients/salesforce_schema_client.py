"""simple-salesforce against the Salesforce simulator: what a third-party client sees of the
connector's schema. Usage: salesforce_schema_client.py <sim base URL>. Prints, as JSON, whether a
SOQL query naming the connector's sync flag works (the error code otherwise), whether `describe()`
lists the connector's fields, and the type and picklist values of "How can Microsoft help?"."""

import json
import sys

from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceMalformedRequest

from routing import routed_session

sim_base = sys.argv[1]
session = routed_session(sim_base, [".salesforce.com"])
sf = Salesforce(consumer_key="cosell-connector", consumer_secret="sim-secret", domain="cosell-sim.my", session=session)

out = {}
try:
    sf.query("SELECT Id, Sync_with_Partner_Center__c FROM Opportunity")
    out["query"] = "ok"
except SalesforceMalformedRequest as e:
    out["query"] = e.content[0]["errorCode"]

fields = {f["name"]: f for f in sf.Opportunity.describe()["fields"]}
out["described"] = sorted(n for n in fields if n.endswith("__c"))
helps = fields.get("How_can_Microsoft_help__c")
if helps:
    out["help_type"] = helps["type"]
    out["help_values"] = [v["value"] for v in helps.get("picklistValues", [])]
print(json.dumps(out))
