//! Who sees what: every route the router serves (read from the OpenAPI document built with it)
//! against every kind of caller of two hospitals and two insurers. Each cell is spelt out
//! below, independently of the API's own policy table; a route without a row fails the test.

mod common;

use common::*;
use domain::values::Role;
use serde_json::Value;
use uuid::Uuid;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    Staff(usize, Role),
    Patient(usize),
    Insurer(usize),
    Admin,
    Auditor,
    Analyst,
}

/// What a caller may see of a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum See {
    All,
    Hospital(usize),
    OwnRecord(usize),
    InsurerClaims(usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Public,
    Forbidden,
    Sees(See),
}

const STAFF: [Role; 6] = [
    Role::Doctor,
    Role::Nurse,
    Role::Receptionist,
    Role::Pharmacist,
    Role::LabTechnician,
    Role::Accountant,
];

fn expect(path: &str, who: Who) -> Expect {
    use Expect::*;
    match path {
        "/healthz" | "/readyz" => Public,
        "/v1/patients" | "/v1/patients/{id}" => match who {
            Who::Staff(i, _) => Sees(See::Hospital(i)),
            Who::Patient(i) => Sees(See::OwnRecord(i)),
            _ => Forbidden,
        },
        "/v1/appointments" | "/v1/prescriptions" | "/v1/inventory" | "/v1/lab-orders"
        | "/v1/invoices" => match who {
            Who::Staff(i, _) => Sees(See::Hospital(i)),
            _ => Forbidden,
        },
        "/v1/plans" => Sees(See::All),
        "/v1/claims" | "/v1/claims/{id}" => match who {
            Who::Insurer(i) => Sees(See::InsurerClaims(i)),
            Who::Staff(i, Role::Accountant) => Sees(See::Hospital(i)),
            _ => Forbidden,
        },
        "/v1/audit/events" | "/v1/audit/aggregates/{type}/{id}" | "/v1/audit/verify" => match who {
            Who::Auditor => Sees(See::All),
            _ => Forbidden,
        },
        "/v1/public-health/cases" => match who {
            Who::Analyst => Sees(See::All),
            _ => Forbidden,
        },
        "/v1/admin/sync-status" | "/v1/admin/organisations" => match who {
            Who::Admin => Sees(See::All),
            _ => Forbidden,
        },
        _ => panic!("the route {path} has no row in the access matrix: add one"),
    }
}

fn actor_of(world: &World, who: Who) -> domain::command::Actor {
    match who {
        Who::Staff(i, role) => {
            let site = &world.sites[i];
            let mut a = site.doctor.clone();
            a.roles = vec![role];
            a
        }
        Who::Patient(i) => world.sites[i].patient.clone(),
        Who::Insurer(i) => world.insurers[i].clone(),
        Who::Admin => world.admin.clone(),
        Who::Auditor => world.auditor.clone(),
        Who::Analyst => world.analyst.clone(),
    }
}

/// The concrete requests for a route: a list is one request; a route with an id is asked for
/// the first hospital's object and the second's, each with the site it belongs to.
fn requests(world: &World, path: &str) -> Vec<(String, Option<usize>)> {
    let per_site = |make: &dyn Fn(&Site) -> String| -> Vec<(String, Option<usize>)> {
        (0..2).map(|i| (make(&world.sites[i]), Some(i))).collect()
    };
    match path {
        "/v1/patients/{id}" => per_site(&|s| format!("/v1/patients/{}", s.patient_id)),
        "/v1/claims/{id}" => per_site(&|s| format!("/v1/claims/{}", s.claim)),
        "/v1/audit/aggregates/{type}/{id}" => {
            per_site(&|s| format!("/v1/audit/aggregates/appointment/{}", s.appointment))
        }
        _ => {
            assert!(!path.contains('{'), "no example for {path}");
            vec![(path.to_owned(), None)]
        }
    }
}

/// Whether an object (a list item or a detail) lies within what the caller may see.
fn within(world: &World, see: See, item: &Value) -> bool {
    let field = |name: &str| {
        item.get(name)
            .and_then(Value::as_str)
            .map(|s| s.parse::<Uuid>().unwrap())
    };
    match see {
        See::All => true,
        See::Hospital(i) => field("hospital_id") == Some(world.sites[i].hospital),
        See::OwnRecord(i) => field("patient_id") == Some(world.sites[i].patient_id),
        See::InsurerClaims(i) => field("insurer_id") == Some(world.insurers[i].org_id.as_uuid()),
    }
}

#[tokio::test]
async fn every_route_answers_every_caller_as_the_matrix_says() {
    let world = World::new();
    let api = world.serve().await;
    let (_, openapi) = query_api::api();
    let paths = query_api::paths(&openapi);
    assert!(paths.len() >= 14, "the router serves {paths:?}");

    let mut callers = vec![
        Who::Admin,
        Who::Auditor,
        Who::Analyst,
        Who::Insurer(0),
        Who::Insurer(1),
    ];
    for i in 0..2 {
        callers.push(Who::Patient(i));
        callers.extend(STAFF.iter().map(|r| Who::Staff(i, *r)));
    }
    let mut cells = 0;
    for path in &paths {
        for (url, owner) in requests(&world, path) {
            // Without a token: 401 for everything but the public routes.
            let anonymous = api.get_as(None, &url, None).await.status().as_u16();
            let public = expect(path, Who::Admin) == Expect::Public;
            assert_eq!(
                anonymous,
                if public { 200 } else { 401 },
                "GET {url} without a token"
            );
            for &who in &callers {
                cells += 1;
                let actor = actor_of(&world, who);
                let response = api.get_as(Some(&actor), &url, None).await;
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap_or(Value::Null);
                match expect(path, who) {
                    Expect::Public => assert_eq!(status, 200, "{who:?} GET {url}: {body}"),
                    Expect::Forbidden => assert_eq!(status, 403, "{who:?} GET {url}: {body}"),
                    Expect::Sees(see) => match owner {
                        // A detail: 200 within the caller's scope, 404 (never 403) outside it.
                        Some(site) => {
                            let object_site_visible = match see {
                                See::All => true,
                                See::Hospital(i) | See::OwnRecord(i) | See::InsurerClaims(i) => {
                                    i == site
                                }
                            };
                            let want = if object_site_visible { 200 } else { 404 };
                            assert_eq!(status, want, "{who:?} GET {url}: {body}");
                            if status == 200 && body.get("hospital_id").is_some() {
                                assert!(within(&world, see, &body), "{who:?} GET {url} saw {body}");
                            }
                        }
                        // A list: 200, and nothing outside the caller's scope.
                        None => {
                            assert_eq!(status, 200, "{who:?} GET {url}: {body}");
                            if let Some(items) = body.get("items").and_then(Value::as_array) {
                                for item in items {
                                    assert!(
                                        within(&world, see, item),
                                        "{who:?} GET {url} saw {item}"
                                    );
                                }
                                if see != See::All && path != "/v1/inventory" {
                                    assert!(!items.is_empty(), "{who:?} GET {url} saw nothing");
                                }
                            }
                        }
                    },
                }
            }
        }
    }
    assert!(cells > 200, "only {cells} cells were checked");
    api.stop().await;
}

#[tokio::test]
async fn a_bad_token_is_401_and_an_expired_one_too() {
    let world = World::new();
    let api = world.serve().await;
    let url = format!("{}/v1/plans", api.base);
    let garbage = api
        .client
        .get(&url)
        .bearer_auth("not.a.token")
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.status().as_u16(), 401);
    assert_eq!(
        garbage.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    let expired = api.token_with_ttl(&world.admin, -120);
    let late = api
        .client
        .get(&url)
        .bearer_auth(expired)
        .send()
        .await
        .unwrap();
    assert_eq!(late.status().as_u16(), 401);
    let no_scheme = api
        .client
        .get(&url)
        .header("authorization", "Basic abc")
        .send()
        .await
        .unwrap();
    assert_eq!(no_scheme.status().as_u16(), 401);
    api.stop().await;
}
