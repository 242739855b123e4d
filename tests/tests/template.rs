//! Security review of `template.yaml` (issue 8.4), as tests that fail when the template regresses:
//! each function's permissions are exactly the ones its code needs (resource-scoped, DynamoDB items
//! scoped by partition-key prefix), no wildcard where a resource is known, no secret in an
//! environment variable, and the only public routes are the signed webhook, the Dataverse webhook
//! (shared key, served only with `DynamicsPush`) and the health check. (That the webhooks reject
//! anything unsigned or forged is tested on the receiver itself: `shared/app/tests`, `e2e.rs`,
//! `functions/webhook-receiver`.) The README's "Security" section lists what these tests cannot check.

use std::collections::{BTreeMap, BTreeSet};

use serde_yaml::Value;

fn template() -> Value {
    serde_yaml::from_str(include_str!("../../template.yaml")).expect("template.yaml parses")
}

fn resources(t: &Value) -> &serde_yaml::Mapping {
    t["Resources"].as_mapping().expect("Resources")
}

fn functions(t: &Value) -> BTreeMap<String, &Value> {
    resources(t)
        .iter()
        .filter(|(_, r)| r["Type"] == "AWS::Serverless::Function")
        .map(|(name, r)| (name.as_str().unwrap().to_owned(), r))
        .collect()
}

fn list(v: &Value) -> Vec<&Value> {
    match v {
        Value::Sequence(items) => items.iter().collect(),
        Value::Null => Vec::new(),
        other => vec![other],
    }
}

/// `!Ref X` / `!GetAtt X.Arn` / `!Sub ...` → a readable form; plain strings as they are.
fn show(v: &Value) -> String {
    match v {
        Value::Tagged(t) => format!("{} {}", t.tag, show(&t.value)),
        Value::String(s) => s.clone(),
        other => serde_yaml::to_string(other).unwrap_or_default().trim().to_owned(),
    }
}

/// `!If [condition, value, !Ref AWS::NoValue]` → `(Some(condition), value)`; anything else as it
/// is. A conditional value may only be there or not: never an alternative value.
fn unless_off(v: &Value) -> (Option<String>, &Value) {
    match v {
        Value::Tagged(t) if t.tag == "!If" => {
            let branches = list(&t.value);
            assert_eq!(branches.len(), 3, "{v:?}");
            assert_eq!(show(branches[2]), "!Ref AWS::NoValue", "a condition adds or removes, never swaps: {v:?}");
            (Some(show(branches[0])), branches[1])
        }
        other => (None, other),
    }
}

/// A function's policies, each with the condition it is granted under.
fn policies(function: &Value) -> Vec<(Option<String>, &Value)> {
    list(&function["Properties"]["Policies"]).into_iter().map(unless_off).collect()
}

/// One permission: action, resource, the partition-key prefixes it is limited to (DynamoDB), and
/// the template condition it is granted under.
type Grant = (String, String, Vec<String>, Option<String>);

fn grants(function: &Value) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for (condition, policy) in policies(function) {
        for statement in list(&policy["Statement"]) {
            assert_eq!(statement["Effect"], "Allow", "{statement:?}");
            let keys: Vec<String> = list(&statement["Condition"]["ForAllValues:StringLike"]["dynamodb:LeadingKeys"])
                .iter()
                .map(|k| show(k))
                .collect();
            for action in list(&statement["Action"]) {
                for resource in list(&statement["Resource"]) {
                    out.insert((show(action), show(resource), keys.clone(), condition.clone()));
                }
            }
        }
    }
    out
}

fn grant(action: &str, resource: &str, keys: &[&str]) -> Grant {
    (action.to_owned(), resource.to_owned(), keys.iter().map(|k| (*k).to_owned()).collect(), None)
}

/// A grant that exists only with Dynamics push on.
fn with_dataverse_push(mut g: Grant) -> Grant {
    g.3 = Some("DataversePush".to_owned());
    g
}

const TABLE: &str = "!GetAtt StateTable.Arn";

#[test]
fn each_function_has_exactly_the_permissions_its_code_needs() {
    let t = template();
    let fns = functions(&t);
    let links = ["REF#*", "CRM#*"];
    let budget = ["BUDGET#*"];
    let worker = |queue: &str| -> BTreeSet<Grant> {
        [
            // Links and audit entries: read, put (links in transactions of puts).
            grant("dynamodb:GetItem", TABLE, &links),
            grant("dynamodb:PutItem", TABLE, &links),
            // The API budget: read and count.
            grant("dynamodb:GetItem", TABLE, &budget),
            grant("dynamodb:UpdateItem", TABLE, &budget),
            // Retry-After through the message's visibility.
            grant("sqs:ChangeMessageVisibility", &format!("!GetAtt {queue}.Arn"), &[]),
            grant("secretsmanager:GetSecretValue", "!Ref PartnerCenterSecret", &[]),
            grant("secretsmanager:GetSecretValue", "!Ref CrmSecret", &[]),
        ]
        .into_iter()
        .collect()
    };
    let expected: BTreeMap<&str, BTreeSet<Grant>> = [
        (
            "WebhookReceiverFunction",
            // No Partner Center or CRM credentials: it verifies signatures with public certificates.
            // With Dynamics push only, the CRM secret (for the webhook key it holds; the receiver
            // makes no CRM call) and the CRM changes queue the pushed record ids go to.
            [
                grant("dynamodb:PutItem", TABLE, &["DEDUP#*"]),
                grant("dynamodb:DeleteItem", TABLE, &["DEDUP#*"]),
                grant("sqs:SendMessage", "!GetAtt PcEventsQueue.Arn", &[]),
                with_dataverse_push(grant("secretsmanager:GetSecretValue", "!Ref CrmSecret", &[])),
                with_dataverse_push(grant("sqs:SendMessage", "!GetAtt CrmChangesQueue.Arn", &[])),
            ]
            .into_iter()
            .collect(),
        ),
        ("PcToCrmFunction", worker("PcEventsQueue")),
        (
            "CrmToPcFunction",
            // A relayed Salesforce change event's records go back on its own queue, one per record.
            worker("CrmChangesQueue")
                .into_iter()
                .chain([grant("sqs:SendMessage", "!GetAtt CrmChangesQueue.Arn", &[])])
                .collect(),
        ),
        (
            "CrmPollerFunction",
            [
                grant("dynamodb:GetItem", TABLE, &links),
                grant("dynamodb:GetItem", TABLE, &["CURSOR#*"]),
                grant("dynamodb:PutItem", TABLE, &["CURSOR#*"]),
                grant("dynamodb:GetItem", TABLE, &budget),
                grant("dynamodb:UpdateItem", TABLE, &budget),
                // list_links (failed CRM records to check again): a scan has no leading key.
                grant("dynamodb:Scan", TABLE, &[]),
                grant("sqs:SendMessage", "!GetAtt PcEventsQueue.Arn", &[]),
                grant("sqs:SendMessage", "!GetAtt CrmChangesQueue.Arn", &[]),
                grant("secretsmanager:GetSecretValue", "!Ref PartnerCenterSecret", &[]),
                grant("secretsmanager:GetSecretValue", "!Ref CrmSecret", &[]),
            ]
            .into_iter()
            .collect(),
        ),
        (
            "WebhookRegistrationFunction",
            // Partner Center; the CRM secret only with Dynamics push (to register the Dataverse
            // webhook with the key it holds). No queue, no link: it syncs nothing.
            [
                grant("dynamodb:GetItem", TABLE, &budget),
                grant("dynamodb:UpdateItem", TABLE, &budget),
                grant("secretsmanager:GetSecretValue", "!Ref PartnerCenterSecret", &[]),
                with_dataverse_push(grant("secretsmanager:GetSecretValue", "!Ref CrmSecret", &[])),
            ]
            .into_iter()
            .collect(),
        ),
    ]
    .into_iter()
    .collect();
    assert_eq!(fns.keys().map(String::as_str).collect::<Vec<_>>(), expected.keys().copied().collect::<Vec<_>>());
    for (name, function) in &fns {
        let got = grants(function);
        let want = &expected[name.as_str()];
        let extra: Vec<_> = got.difference(want).collect();
        let missing: Vec<_> = want.difference(&got).collect();
        assert!(extra.is_empty() && missing.is_empty(), "{name}: extra {extra:#?}, missing {missing:#?}");
    }
}

#[test]
fn no_policy_uses_a_wildcard_or_a_literal_resource() {
    let t = template();
    for (name, function) in functions(&t) {
        for (action, resource, keys, _) in grants(function) {
            assert!(!action.contains('*'), "{name}: wildcard action {action}");
            // Every resource is one of the stack's own, by reference; never "*" or a hand-written ARN.
            assert!(resource.starts_with("!Ref ") || resource.starts_with("!GetAtt "), "{name}: {resource}");
            assert!(!resource.contains('*'), "{name}: wildcard resource {resource}");
            // DynamoDB item actions are limited to their items' partition-key prefixes.
            if action.starts_with("dynamodb:") && action != "dynamodb:Scan" {
                assert!(!keys.is_empty(), "{name}: {action} on every item of the table");
            }
        }
        // No managed policy or policy template either: they grant more than the function needs.
        for (_, policy) in policies(function) {
            assert!(policy.get("Statement").is_some(), "{name}: a policy that is not an inline statement: {policy:?}");
        }
    }
}

#[test]
fn no_secret_is_passed_in_an_environment_variable() {
    let t = template();
    let mut variables: Vec<(String, String, &Value)> = Vec::new();
    let globals = &t["Globals"]["Function"]["Environment"]["Variables"];
    for (k, v) in globals.as_mapping().expect("global variables") {
        variables.push(("Globals".into(), show(k), v));
    }
    for (name, function) in functions(&t) {
        if let Some(vars) = function["Properties"]["Environment"]["Variables"].as_mapping() {
            for (k, v) in vars {
                variables.push((name.clone(), show(k), v));
            }
        }
    }
    let secret_words = ["SECRET", "PASSWORD", "TOKEN", "KEY", "CREDENTIAL", "PRIVATE"];
    let parameters = t["Parameters"].as_mapping().expect("parameters");
    for (owner, key, value) in &variables {
        // A variable set only under a condition is checked for what it is when set.
        let (_, value) = unless_off(value);
        // Credentials travel as Secrets Manager ARNs only.
        if secret_words.iter().any(|w| key.contains(w)) {
            assert!(key.ends_with("_SECRET_ARN"), "{owner}: {key} looks like a secret");
            assert!(show(value).starts_with("!Ref ") && show(value).ends_with("Secret"), "{owner}: {key}");
        }
        // A literal value is a setting, never a credential: short, and one of the known ones.
        if let Value::String(literal) = value {
            assert!(["aws", "json", "info"].contains(&literal.as_str()), "{owner}: {key} = {literal:?}");
        }
        // A parameter in an environment variable is configuration, not a secret (no NoEcho parameter).
        if let Value::Tagged(tagged) = value
            && tagged.tag == "!Ref"
            && let Some(parameter) = parameters.get(show(&tagged.value).as_str())
        {
            assert!(parameter.get("NoEcho").is_none(), "{owner}: {key} carries a NoEcho parameter");
        }
    }
    assert!(variables.iter().any(|(_, k, _)| k == "COSELL_PC_SECRET_ARN"), "the test read the variables");
}

#[test]
fn the_only_public_routes_are_the_signed_webhook_the_keyed_dataverse_webhook_and_the_health_check() {
    let t = template();
    let mut routes = Vec::new();
    for (name, function) in functions(&t) {
        if let Some(events) = function["Properties"]["Events"].as_mapping() {
            for (_, event) in events {
                if event["Type"] == "HttpApi" || event["Type"] == "Api" {
                    let p = &event["Properties"];
                    routes.push((name.clone(), show(&p["Method"]), show(&p["Path"])));
                }
            }
        }
    }
    routes.sort();
    assert_eq!(
        routes,
        [
            ("WebhookReceiverFunction".to_owned(), "GET".to_owned(), "/health".to_owned()),
            ("WebhookReceiverFunction".to_owned(), "POST".to_owned(), cosell_app::push::DATAVERSE_PATH.to_owned()),
            ("WebhookReceiverFunction".to_owned(), "POST".to_owned(), "/webhook".to_owned()),
        ],
        "the receiver verifies every Partner Center delivery's signature and authenticates every Dataverse \
         delivery by the shared key (compared in constant time; served only with DynamicsPush); any other \
         public route would not be"
    );
    // The API throttles, so that a flood of forged deliveries costs little.
    let api = &resources(&t)["WebhookApi"]["Properties"]["DefaultRouteSettings"];
    assert!(api["ThrottlingRateLimit"].as_u64().is_some_and(|r| r <= 100), "{api:?}");
}

#[test]
fn salesforce_push_is_off_by_default_and_only_its_rule_may_send_to_crm_changes() {
    let t = template();
    let r = resources(&t);
    // Empty parameter = no bus, rule or queue policy: the poll alone.
    assert_eq!(t["Parameters"]["SalesforceEventSource"]["Default"], "");
    let condition = format!("{:?}", t["Conditions"]["SalesforcePush"]);
    assert!(
        condition.contains("!Not") && condition.contains("!Equals") && condition.contains("SalesforceEventSource"),
        "{condition}"
    );
    for name in ["SalesforceEventBus", "SalesforceChangeEventsRule", "SalesforceChangeEventsQueuePolicy"] {
        assert_eq!(r[name]["Condition"], "SalesforcePush", "{name} exists only with push on");
    }
    // The partner event bus is the association: named as the source, matched to it.
    let bus = &r["SalesforceEventBus"]["Properties"];
    assert_eq!(show(&bus["Name"]), "!Ref SalesforceEventSource");
    assert_eq!(show(&bus["EventSourceName"]), "!Ref SalesforceEventSource");
    // The rule: on that bus, only the relay's change events of the synced objects, to crm-changes.
    let rule = &r["SalesforceChangeEventsRule"]["Properties"];
    assert_eq!(show(&rule["EventBusName"]), "!Ref SalesforceEventBus");
    assert_eq!(
        list(&rule["EventPattern"]["source"]).iter().map(|v| show(v)).collect::<Vec<_>>(),
        ["!Ref SalesforceEventSource"]
    );
    let types: Vec<String> = list(&rule["EventPattern"]["detail-type"]).iter().map(|v| show(v)).collect();
    assert_eq!(types, ["OpportunityChangeEvent", "LeadChangeEvent", "Microsoft_Solution__ChangeEvent"]);
    let targets = list(&rule["Targets"]);
    assert_eq!(targets.len(), 1, "one target: {targets:?}");
    assert_eq!(show(&targets[0]["Arn"]), "!GetAtt CrmChangesQueue.Arn");
    let group = targets[0]["SqsParameters"]["MessageGroupId"].as_str().expect("a FIFO target needs a group");
    assert!(!group.is_empty() && group.len() <= 100, "{group}");
    assert!(targets[0].get("RoleArn").is_none(), "SQS targets are authorised by the queue policy, not a role");
    // The target sends no deduplication id: the queue must make one from the body.
    assert_eq!(r["CrmChangesQueue"]["Properties"]["ContentBasedDeduplication"], true);
    // The queue policy: EventBridge may send, to this queue, only for this rule.
    let policy = &r["SalesforceChangeEventsQueuePolicy"]["Properties"];
    assert_eq!(list(&policy["Queues"]).iter().map(|v| show(v)).collect::<Vec<_>>(), ["!Ref CrmChangesQueue"]);
    let statements = list(&policy["PolicyDocument"]["Statement"]);
    assert_eq!(statements.len(), 1, "{statements:?}");
    let s = statements[0];
    assert_eq!(s["Effect"], "Allow");
    assert_eq!(s["Principal"]["Service"], "events.amazonaws.com");
    assert_eq!(list(&s["Action"]).iter().map(|v| show(v)).collect::<Vec<_>>(), ["sqs:SendMessage"]);
    assert_eq!(show(&s["Resource"]), "!GetAtt CrmChangesQueue.Arn");
    assert_eq!(show(&s["Condition"]["ArnEquals"]["aws:SourceArn"]), "!GetAtt SalesforceChangeEventsRule.Arn");
    // Nothing else in the stack grants a service principal access to the queues.
    let policies: Vec<&str> =
        r.iter().filter(|(_, v)| v["Type"] == "AWS::SQS::QueuePolicy").map(|(k, _)| k.as_str().unwrap()).collect();
    assert_eq!(policies, ["SalesforceChangeEventsQueuePolicy"]);
}

#[test]
fn dynamics_push_is_off_by_default_and_only_with_it_do_the_receiver_and_registration_see_the_crm_secret() {
    let t = template();
    let r = resources(&t);
    assert_eq!(t["Parameters"]["DynamicsPush"]["Default"], "false");
    let condition = format!("{:?}", t["Conditions"]["DataversePush"]);
    assert!(
        condition.contains("!Equals") && condition.contains("DynamicsPush") && condition.contains("true"),
        "{condition}"
    );
    let variable = |function: &str, key: &str| {
        let v = &r[function]["Properties"]["Environment"]["Variables"][key];
        let (condition, value) = unless_off(v);
        (condition, show(value))
    };
    // The switch the code reads, and the CRM secret's ARN (the receiver reads the key from it).
    for function in ["WebhookReceiverFunction", "WebhookRegistrationFunction"] {
        assert_eq!(variable(function, "COSELL_DYNAMICS_PUSH"), (None, "!Ref DynamicsPush".to_owned()), "{function}");
        assert_eq!(
            variable(function, "COSELL_CRM_SECRET_ARN"),
            (Some("DataversePush".to_owned()), "!Ref CrmSecret".to_owned()),
            "{function}"
        );
    }
    // Registration: the URL Dataverse calls is the receiver's route, from the manual default and
    // from the custom resource alike.
    let url = "!Sub https://${WebhookApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}/crm/dataverse";
    assert_eq!(
        variable("WebhookRegistrationFunction", "COSELL_DATAVERSE_WEBHOOK_URL"),
        (Some("DataversePush".to_owned()), url.to_owned())
    );
    let (condition, property) = unless_off(&r["WebhookRegistration"]["Properties"]["DataverseWebhookUrl"]);
    assert_eq!((condition.as_deref(), show(property).as_str()), (Some("DataversePush"), url));
    assert!(url.ends_with(cosell_app::push::DATAVERSE_PATH));
}
