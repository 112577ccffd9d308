//! GET /api/v1/openapi.json, black-box: it describes every route the router serves, is a valid
//! OpenAPI 3.1 document, and states the input rules the API applies.

mod adminkit;
mod common;

use adminkit::*;
use iotpay_devtools::testing::TestDatabase;
use serde_json::{json, Value};

#[tokio::test]
async fn the_openapi_document_describes_every_route_the_router_serves() {
    let db = TestDatabase::create().await;
    let admin = Admin::spawn(&db, &[]).await;
    let (status, served) = json(admin.get("/api/v1/openapi.json")).await;
    assert_eq!(status, 200);
    let doc = openapi();
    assert_eq!(served, doc);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "OpenAPI 3");
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");

    // Every `.route("/v1/...", method(...))` of the API router, read from its source.
    let source = include_str!("../crates/iotpay-notify/src/admin/api/mod.rs");
    let mut routed = Vec::new();
    for line in source.lines().map(str::trim).filter(|l| l.starts_with(".route(\"")) {
        let path = line.split('"').nth(1).unwrap();
        let method = line.split(", ").nth(1).unwrap().split('(').next().unwrap();
        routed.push((format!("/api{path}"), method.to_owned()));
    }
    assert!(routed.len() >= 6, "{routed:?}");
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in &routed {
        let op = &paths.get(path).unwrap_or_else(|| panic!("{path} is served but not documented"))[method];
        assert!(op.is_object(), "{method} {path} is served but not documented");
        for code in ["200", "401"] {
            assert!(op["responses"][code].is_object(), "{method} {path}: response {code} undocumented");
        }
    }
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            assert!(routed.contains(&(path.clone(), method.clone())), "{method} {path} documented but not served");
        }
    }

    // Every schema compiles as JSON Schema 2020-12 and every $ref resolves.
    let text = serde_json::to_string(&doc).unwrap();
    for name in doc["components"]["schemas"].as_object().unwrap().keys() {
        let mut root = doc.clone();
        root["$ref"] = json!(format!("#/components/schemas/{name}"));
        jsonschema::options().build(&root).unwrap_or_else(|e| panic!("schema {name}: {e}"));
    }
    for r in text.split("\"$ref\":\"").skip(1) {
        let target = r.split('"').next().unwrap();
        let name = target.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("external $ref {target}"));
        assert!(doc["components"]["schemas"][name].is_object(), "dangling $ref {target}");
    }
    // The error body every failure uses matches the documented Error schema.
    let (_, err) = json(admin.get("/api/v1/events?status=nope")).await;
    validate(&err, "Error");
    let (_, page) = json(admin.get("/api/v1/events")).await;
    validate(&page, "EventPage");
}

#[test]
fn the_openapi_document_is_valid_against_the_openapi_3_1_meta_schema() {
    let doc = openapi();
    assert_eq!(doc["openapi"], "3.1.0", "the meta-schema below is 3.1's");
    let meta: Value = serde_json::from_str(include_str!("data/openapi-3.1-schema.json")).unwrap();
    let validator = jsonschema::options().build(&meta).expect("the meta-schema compiles");
    let errors: Vec<String> = validator.iter_errors(&doc).map(|e| format!("{e} at {}", e.instance_path())).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    // And the meta-schema does catch a broken document (it is not a no-op).
    let mut broken = doc.clone();
    broken["paths"]["/api/v1/stats"]["get"]["responses"] = json!("none");
    broken["info"] = json!({});
    assert!(!validator.is_valid(&broken));
}

#[tokio::test]
async fn the_document_states_the_input_rules_the_api_applies() {
    let db = TestDatabase::create().await;
    let admin = Admin::spawn(&db, &[]).await;
    let doc = openapi();
    let compile = |schema: &Value| {
        let mut root = doc.clone();
        root["$ref"] = json!("#/$defs/target");
        root["$defs"] = json!({ "target": schema });
        jsonschema::options().build(&root).expect("compiles")
    };
    let refused = ["", "a\u{0}b", "a\u{1b}[31m", "a\u{85}b", &"x".repeat(129)];
    let accepted = ["PC2026112200224", "order #12 / ünïcode", &"x".repeat(128)];
    // Query parameters of the list: the API's 400s are refusals the schema states too.
    let params = doc["paths"]["/api/v1/events"]["get"]["parameters"].as_array().unwrap();
    for name in ["event_type", "mch_id", "mch_order_no", "pay_order_id", "id"] {
        let p = params.iter().find(|p| p["name"] == name).unwrap();
        let schema = compile(&p["schema"]);
        for v in refused {
            assert!(!schema.is_valid(&json!(v)), "{name}={v:?} is refused by the API but valid per the document");
            let got = json(admin.client.get(admin.url("/api/v1/events")).bearer_auth(TOKEN).query(&[(name, v)])).await;
            assert_error(&got, 400, "bad_request", Some(name));
        }
        for v in accepted {
            assert!(schema.is_valid(&json!(v)), "{name}={v:?}");
            let (status, _) =
                json(admin.client.get(admin.url("/api/v1/events")).bearer_auth(TOKEN).query(&[(name, v)])).await;
            assert_eq!(status, 200, "{name}={v:?}");
        }
    }
    // The same rule in the bodies and paths that use it.
    let schemas = &doc["components"]["schemas"];
    let order_path = &doc["paths"]["/api/v1/orders/{mch_id}/{mch_order_no}"]["get"]["parameters"];
    for (what, schema) in [
        ("OrderRequest.mch_id", &schemas["OrderRequest"]["properties"]["mch_id"]),
        ("OrderRequest.mch_order_no", &schemas["OrderRequest"]["properties"]["mch_order_no"]),
        ("order path mch_id", &order_path[0]["schema"]),
        ("order path mch_order_no", &order_path[1]["schema"]),
    ] {
        let schema = compile(schema);
        for v in refused {
            assert!(!schema.is_valid(&json!(v)), "{what}: {v:?}");
        }
        for v in accepted {
            assert!(schema.is_valid(&json!(v)), "{what}: {v:?}");
        }
    }
    let endpoint = compile(&schemas["RedriveRequest"]["properties"]["endpoint"]);
    for v in ["", "http://h/x\u{85}", "http://h/x\u{0}"] {
        assert!(!endpoint.is_valid(&json!(v)), "{v:?}");
        let got = json(admin.post("/api/v1/deliveries/redrive", &json!({ "endpoint": v }))).await;
        assert_error(&got, 400, "bad_request", Some("endpoint"));
    }
}
