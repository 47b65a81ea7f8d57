//! Who sees what, in one place. Every route has an [`Audience`] in [`POLICY`]; the
//! [`authorize`] middleware checks the token and the role for every request before any handler
//! runs (401 for a bad token, 403 for a role that may never use the route) and hands the handler
//! a [`Caller`] whose [`Scope`] is the tenant filter its queries apply. An object of another
//! tenant is then simply not found (404), so ids cannot be probed.

use crate::Shared;
use crate::error::ApiError;
use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use domain::values::Role;
use uuid::Uuid;

/// Who may use a route at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Audience {
    /// No token needed: health, readiness, the API's own documentation.
    Public,
    /// Anyone signed in.
    SignedIn,
    /// Hospital staff (their hospital's records).
    HospitalStaff,
    /// Hospital staff (their hospital's), or a patient (their own record).
    StaffOrPatient,
    /// An insurer (claims on its plans) or an accountant (claims its hospital submitted).
    ClaimReaders,
    Auditor,
    Analyst,
    Admin,
}

/// Every route of the API and who may use it. A route without a row here cannot be served:
/// [`crate::router`] refuses to build (and a test builds it).
pub const POLICY: &[(&str, Audience)] = &[
    ("/healthz", Audience::Public),
    ("/readyz", Audience::Public),
    ("/openapi.json", Audience::Public),
    ("/v1/patients", Audience::StaffOrPatient),
    ("/v1/patients/{id}", Audience::StaffOrPatient),
    ("/v1/appointments", Audience::HospitalStaff),
    ("/v1/prescriptions", Audience::HospitalStaff),
    ("/v1/inventory", Audience::HospitalStaff),
    ("/v1/lab-orders", Audience::HospitalStaff),
    ("/v1/invoices", Audience::HospitalStaff),
    ("/v1/plans", Audience::SignedIn),
    ("/v1/claims", Audience::ClaimReaders),
    ("/v1/claims/{id}", Audience::ClaimReaders),
    ("/v1/audit/events", Audience::Auditor),
    ("/v1/audit/aggregates/{type}/{id}", Audience::Auditor),
    ("/v1/audit/verify", Audience::Auditor),
    ("/v1/public-health/cases", Audience::Analyst),
    ("/v1/admin/sync-status", Audience::Admin),
    ("/v1/admin/organisations", Audience::Admin),
];

/// The audience of a route, by its path template.
pub fn audience_of(path: &str) -> Option<Audience> {
    POLICY.iter().find(|(p, _)| *p == path).map(|(_, a)| *a)
}

/// The rows a caller may see of what a route serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Everything the route serves (auditor, analyst, admin, or a route for everyone).
    All,
    /// One hospital's rows.
    Hospital(Uuid),
    /// One patient's own record.
    Patient(Uuid),
    /// The claims on one insurer's plans.
    Insurer(Uuid),
}

/// The signed-in caller of a request, with the scope the route's audience grants.
#[derive(Clone, Debug)]
pub struct Caller {
    pub user_id: Uuid,
    pub org_id: Uuid,
    pub roles: Vec<Role>,
    pub scope: Scope,
}

/// Whether a caller with these claims may use a route of this audience, and with what scope.
/// `None`: never (403).
pub fn grant(
    audience: Audience,
    roles: &[Role],
    org_id: Uuid,
    patient_id: Option<Uuid>,
) -> Option<Scope> {
    let has = |role: Role| roles.contains(&role);
    let staff = roles.iter().any(Role::is_hospital_staff);
    match audience {
        Audience::Public | Audience::SignedIn => Some(Scope::All),
        Audience::HospitalStaff => staff.then_some(Scope::Hospital(org_id)),
        Audience::StaffOrPatient => {
            if staff {
                Some(Scope::Hospital(org_id))
            } else if has(Role::Patient) {
                patient_id.map(Scope::Patient)
            } else {
                None
            }
        }
        Audience::ClaimReaders => {
            if has(Role::Insurer) {
                Some(Scope::Insurer(org_id))
            } else if has(Role::Accountant) {
                Some(Scope::Hospital(org_id))
            } else {
                None
            }
        }
        Audience::Auditor => has(Role::Auditor).then_some(Scope::All),
        Audience::Analyst => has(Role::Analyst).then_some(Scope::All),
        Audience::Admin => has(Role::Admin).then_some(Scope::All),
    }
}

/// The middleware every route goes through.
pub async fn authorize(
    State(shared): State<Shared>,
    matched: Option<MatchedPath>,
    mut request: Request,
    next: Next,
) -> Response {
    // Unmatched paths fall through to the router's 404.
    let Some(path) = matched.map(|m| m.as_str().to_owned()) else {
        return next.run(request).await;
    };
    let Some(audience) = audience_of(&path) else {
        // Cannot happen once the router is built (see crate::router), but never serve it.
        return ApiError::Internal(format!("no access policy for {path}")).into_response();
    };
    if path.starts_with("/docs") || audience == Audience::Public {
        return next.run(request).await;
    }
    let claims = match platform::http::bearer_token(request.headers())
        .map_err(|e| match e {
            platform::http::RequestError::Unauthorized(why) => why,
            other => format!("{other:?}"),
        })
        .and_then(|token| {
            shared
                .verifier
                .verify(token)
                .map_err(|e| format!("the token is not valid: {e}"))
        }) {
        Ok(claims) => claims,
        Err(why) => return ApiError::Unauthorized(why).into_response(),
    };
    let Some(scope) = grant(audience, &claims.roles, claims.org_id, claims.patient_id) else {
        let roles: Vec<&str> = claims.roles.iter().map(Role::as_str).collect();
        return ApiError::Forbidden(format!(
            "the role(s) {} may not read {path}",
            if roles.is_empty() {
                "(none)".to_owned()
            } else {
                roles.join(", ")
            }
        ))
        .into_response();
    };
    request.extensions_mut().insert(Caller {
        user_id: claims.sub,
        org_id: claims.org_id,
        roles: claims.roles,
        scope,
    });
    next.run(request).await
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::Unauthorized("sign in first".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_role_outside_the_audience_is_refused_and_staff_are_scoped_to_their_hospital() {
        let org = Uuid::now_v7();
        let patient = Uuid::now_v7();
        assert_eq!(
            grant(Audience::HospitalStaff, &[Role::Doctor], org, None),
            Some(Scope::Hospital(org))
        );
        assert_eq!(
            grant(Audience::HospitalStaff, &[Role::Admin], org, None),
            None
        );
        assert_eq!(
            grant(
                Audience::StaffOrPatient,
                &[Role::Patient],
                org,
                Some(patient)
            ),
            Some(Scope::Patient(patient))
        );
        // A patient account without its record cannot see any record.
        assert_eq!(
            grant(Audience::StaffOrPatient, &[Role::Patient], org, None),
            None
        );
        assert_eq!(
            grant(Audience::ClaimReaders, &[Role::Insurer], org, None),
            Some(Scope::Insurer(org))
        );
        assert_eq!(
            grant(Audience::ClaimReaders, &[Role::Accountant], org, None),
            Some(Scope::Hospital(org))
        );
        assert_eq!(
            grant(Audience::ClaimReaders, &[Role::Doctor], org, None),
            None
        );
        assert_eq!(grant(Audience::Admin, &[Role::Auditor], org, None), None);
        assert_eq!(
            grant(Audience::Auditor, &[Role::Auditor], org, None),
            Some(Scope::All)
        );
    }
}
