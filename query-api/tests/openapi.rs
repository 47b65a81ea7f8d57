//! The API documents itself: `/openapi.json` is OpenAPI 3.1 with every route the router serves,
//! each parameter and error, and `/docs` is Swagger UI served from the binary (no CDN).

mod common;

use common::*;
use serde_json::Value;

#[tokio::test]
async fn the_document_covers_every_route_with_its_parameters_and_errors() {
    let world = World::new();
    let api = world.serve().await;
    let response = api.get_as(None, "/openapi.json", None).await;
    assert_eq!(response.status().as_u16(), 200);
    let doc: Value = response.json().await.unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );

    let (_, built) = query_api::api();
    let mut served = query_api::paths(&built);
    served.sort();
    let documented: Vec<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    assert_eq!(documented, served, "the document is the router's");
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());

    for (path, item) in doc["paths"].as_object().unwrap() {
        let get = &item["get"];
        assert!(get.is_object(), "{path} has GET");
        let responses = get["responses"].as_object().unwrap();
        assert!(responses.contains_key("200"), "{path} documents 200");
        let public = matches!(path.as_str(), "/healthz" | "/readyz");
        if public {
            continue;
        }
        for status in ["401", "503"] {
            assert!(responses.contains_key(status), "{path} documents {status}");
        }
        assert!(get["security"].is_array(), "{path} needs a token");
        let params: Vec<&str> = get["parameters"]
            .as_array()
            .map(|p| p.iter().map(|p| p["name"].as_str().unwrap()).collect())
            .unwrap_or_default();
        for placeholder in path.split('/').filter(|s| s.starts_with('{')) {
            let name = placeholder.trim_matches(|c| c == '{' || c == '}');
            assert!(params.contains(&name), "{path} documents its {name}");
        }
        let is_list = responses["200"]["content"].get("text/csv").is_some();
        if is_list {
            assert!(
                params.contains(&"limit") && params.contains(&"after"),
                "{path}: {params:?}"
            );
            assert!(responses.contains_key("422"), "{path} documents 422");
        }
    }

    // A filter taking one word of a fixed set lists the words, so a client can offer them.
    for (path, name, words) in [
        (
            "/v1/appointments",
            "status",
            &[
                "pending",
                "approved",
                "completed",
                "rejected",
                "cancelled",
                "needs_rescheduling",
            ][..],
        ),
        ("/v1/prescriptions", "status", &["issued", "dispensed"]),
        (
            "/v1/invoices",
            "status",
            &["open", "partially_paid", "paid"],
        ),
        (
            "/v1/claims",
            "status",
            &["submitted", "approved", "rejected"],
        ),
        ("/v1/admin/organisations", "kind", &["hospital", "insurer"]),
    ] {
        let param = doc["paths"][path]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{path} documents {name}"));
        assert_eq!(
            enum_words(&param["schema"]),
            words,
            "{path} {name}: {param}"
        );
    }
    api.stop().await;
}

/// The words of the first `enum` within a schema.
fn enum_words(schema: &Value) -> Vec<&str> {
    match schema {
        Value::Object(map) => match map.get("enum") {
            Some(Value::Array(words)) => words.iter().filter_map(Value::as_str).collect(),
            _ => map
                .values()
                .map(enum_words)
                .find(|w| !w.is_empty())
                .unwrap_or_default(),
        },
        Value::Array(items) => items
            .iter()
            .map(enum_words)
            .find(|w| !w.is_empty())
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

#[tokio::test]
async fn swagger_ui_is_served_from_the_binary() {
    let world = World::new();
    let api = world.serve().await;
    let page = api.get_as(None, "/docs", None).await;
    assert_eq!(page.status().as_u16(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");
    assert!(html.contains("/openapi.json"));
    for cdn in ["unpkg.com", "jsdelivr", "cdnjs", "http://", "https://"] {
        assert!(!html.contains(cdn), "the page loads from {cdn}");
    }
    for asset in ["/docs/swagger-ui-bundle.js", "/docs/swagger-ui.css"] {
        let response = api.get_as(None, asset, None).await;
        assert_eq!(response.status().as_u16(), 200, "{asset}");
        assert!(
            response.bytes().await.unwrap().len() > 10_000,
            "{asset} is the real file"
        );
    }
    api.stop().await;
}
