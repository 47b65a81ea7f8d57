//! The user aggregate: accounts, their organisation and roles, and their TOTP enrolment.
//! Deactivation and role changes take effect at the user's next login.
//!
//! Logins and MFA enrolment are recorded by the command service itself (`UserLoggedIn`,
//! `LoginFailed`, `MfaEnrolmentStarted`, `MfaEnabled`), not decided from a command; the
//! service asks [`may_log_in`], [`mfa_required`] and [`must_enrol_mfa`] what to do.

use crate::command::{AssignRole, DeactivateUser, RegisterUser, RevokeRole};
use crate::decide::Ctx;
use crate::event::{Event, RoleAssigned, RoleRevoked, UserDeactivated, UserRegistered};
use crate::permission;
use crate::rejection::{FieldError, Rejection};
use crate::state::Stamp;
use crate::values::*;
use serde::Serialize;
use std::collections::BTreeSet;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct User {
    pub user_id: UserId,
    pub username: Username,
    /// Never shown: serialising a user (the audit's state as of a moment) leaves it out.
    #[serde(skip_serializing)]
    pub password_hash: PasswordHash,
    pub display_name: Name,
    pub org_id: OrgId,
    pub roles: BTreeSet<Role>,
    pub patient_id: Option<PatientId>,
    pub active: bool,
    pub mfa: Mfa,
}

/// A user's TOTP enrolment, as the nonces its secrets are derived from (the secrets themselves
/// are never recorded).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Mfa {
    /// The latest enrolment started and not yet confirmed.
    #[serde(serialize_with = "is_some")]
    pub pending: Option<SecretNonce>,
    /// The confirmed enrolment: logins need a code from this nonce's secret.
    #[serde(serialize_with = "is_some")]
    pub enabled: Option<SecretNonce>,
}

/// A nonce is serialised only as whether it is there: with the service's key it gives the TOTP
/// secret, so a view of the state has no business holding it.
fn is_some<S: serde::Serializer>(nonce: &Option<SecretNonce>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bool(nonce.is_some())
}

impl Mfa {
    pub fn is_enabled(&self) -> bool {
        self.enabled.is_some()
    }
}

/// Whether the account may log in at all, whatever the password and code: a deactivated one
/// may not.
pub fn may_log_in(user: &User) -> Result<(), LoginFailure> {
    if user.active {
        Ok(())
    } else {
        Err(LoginFailure::Deactivated)
    }
}

/// Whether this user's login must carry a valid TOTP code: always once MFA is enabled for them.
/// With `enforce_for_roles` (a deployment's policy that admins and insurers use MFA), also for
/// such a user who has not enrolled yet, who then cannot log in with a password alone: turn
/// enforcement on once they have enrolled, and use [`must_enrol_mfa`] to ask them to meanwhile.
pub fn mfa_required(user: &User, enforce_for_roles: bool) -> bool {
    user.mfa.is_enabled() || (enforce_for_roles && must_enrol_mfa(user))
}

/// Whether the user holds a role that should use MFA (admin or insurer) and has not enabled it.
pub fn must_enrol_mfa(user: &User) -> bool {
    !user.mfa.is_enabled()
        && (user.roles.contains(&Role::Admin) || user.roles.contains(&Role::Insurer))
}

pub fn register(state: Option<User>, c: &RegisterUser, ctx: &Ctx) -> Result<Vec<Event>, Rejection> {
    permission::admin_over(ctx.actor(), c.org_id)?;
    let Some(org_kind) = ctx.facts.org_kind(c.org_id) else {
        return Err(Rejection::not_found(AggregateType::Hospital, c.org_id));
    };
    if state.is_some() {
        return Err(Rejection::conflict(format!(
            "user {} already exists",
            c.user_id
        )));
    }
    if ctx.facts.username_taken(&c.username) {
        return Err(Rejection::conflict(format!(
            "the username {} is taken",
            c.username
        )));
    }
    let mut errors = Vec::new();
    if let Err(e) = permission::check_roles(org_kind, &c.roles, "roles") {
        errors.push(e);
    }
    let is_patient = c.roles.contains(&Role::Patient);
    match (is_patient, c.patient_id) {
        (true, None) => errors.push(FieldError::new(
            "patient_id",
            "is required for a patient's own account",
        )),
        (false, Some(_)) => errors.push(FieldError::new(
            "patient_id",
            "is only for an account with the patient role",
        )),
        (true, Some(patient_id)) => match ctx.facts.patient(patient_id) {
            None => return Err(Rejection::not_found(AggregateType::Patient, patient_id)),
            Some(p) if OrgId::from(p.hospital_id) != c.org_id => errors.push(FieldError::new(
                "patient_id",
                "is a patient of another hospital",
            )),
            Some(p) if p.merged_into.is_some() => {
                return Err(Rejection::conflict(format!(
                    "patient {patient_id} was merged into another record; link the account to that one"
                )));
            }
            Some(_) => {}
        },
        (false, None) => {}
    }
    if !errors.is_empty() {
        return Err(Rejection::Invalid(errors));
    }
    Ok(vec![
        UserRegistered {
            user_id: c.user_id,
            username: c.username.clone(),
            password_hash: c.password_hash.clone(),
            display_name: c.display_name.clone(),
            org_id: c.org_id,
            roles: c.roles.clone(),
            patient_id: c.patient_id,
        }
        .into(),
    ])
}

/// The user, which must exist, be active and be within the admin's reach.
fn managed(state: Option<User>, user_id: UserId, ctx: &Ctx) -> Result<User, Rejection> {
    let user = state.ok_or_else(|| Rejection::not_found(AggregateType::User, user_id))?;
    permission::admin_over(ctx.actor(), user.org_id)?;
    if !user.active {
        return Err(Rejection::conflict(format!(
            "user {user_id} is deactivated"
        )));
    }
    Ok(user)
}

pub fn assign_role(
    state: Option<User>,
    c: &AssignRole,
    ctx: &Ctx,
) -> Result<Vec<Event>, Rejection> {
    let user = managed(state, c.user_id, ctx)?;
    if user.roles.contains(&c.role) {
        return Err(Rejection::conflict(format!(
            "user {} already holds the role {}",
            c.user_id, c.role
        )));
    }
    let org_kind = ctx
        .facts
        .org_kind(user.org_id)
        .ok_or_else(|| Rejection::not_found(AggregateType::Hospital, user.org_id))?;
    // An account has a patient record exactly when it has the patient role.
    match (c.role == Role::Patient, user.patient_id.is_some()) {
        (true, false) => {
            return Err(Rejection::invalid(
                "role",
                "the patient role is only for an account linked to a patient record",
            ));
        }
        (false, true) => {
            return Err(Rejection::invalid(
                "role",
                "a patient account holds the patient role alone",
            ));
        }
        _ => {}
    }
    let mut roles: Vec<Role> = user.roles.iter().copied().collect();
    roles.push(c.role);
    permission::check_roles(org_kind, &roles, "role").map_err(|e| Rejection::Invalid(vec![e]))?;
    Ok(vec![
        RoleAssigned {
            user_id: c.user_id,
            org_id: user.org_id,
            role: c.role,
        }
        .into(),
    ])
}

pub fn revoke_role(
    state: Option<User>,
    c: &RevokeRole,
    ctx: &Ctx,
) -> Result<Vec<Event>, Rejection> {
    let user = managed(state, c.user_id, ctx)?;
    if !user.roles.contains(&c.role) {
        return Err(Rejection::conflict(format!(
            "user {} does not hold the role {}",
            c.user_id, c.role
        )));
    }
    Ok(vec![
        RoleRevoked {
            user_id: c.user_id,
            org_id: user.org_id,
            role: c.role,
        }
        .into(),
    ])
}

pub fn deactivate(
    state: Option<User>,
    c: &DeactivateUser,
    ctx: &Ctx,
) -> Result<Vec<Event>, Rejection> {
    let user = managed(state, c.user_id, ctx)?;
    if user.user_id == ctx.user() {
        return Err(Rejection::conflict(
            "an admin may not deactivate their own account",
        ));
    }
    Ok(vec![
        UserDeactivated {
            user_id: c.user_id,
            org_id: user.org_id,
        }
        .into(),
    ])
}

pub fn evolve(state: Option<User>, event: &Event, _stamp: &Stamp) -> Option<User> {
    match (state, event) {
        (None, Event::UserRegistered(e)) => Some(User {
            user_id: e.user_id,
            username: e.username.clone(),
            password_hash: e.password_hash.clone(),
            display_name: e.display_name.clone(),
            org_id: e.org_id,
            roles: e.roles.iter().copied().collect(),
            patient_id: e.patient_id,
            active: true,
            mfa: Mfa::default(),
        }),
        (Some(mut u), Event::RoleAssigned(e)) => {
            u.roles.insert(e.role);
            Some(u)
        }
        (Some(mut u), Event::RoleRevoked(e)) => {
            u.roles.remove(&e.role);
            Some(u)
        }
        (Some(mut u), Event::UserDeactivated(_)) => {
            u.active = false;
            Some(u)
        }
        (Some(mut u), Event::MfaEnrolmentStarted(e)) => {
            u.mfa.pending = Some(e.secret_nonce.clone());
            Some(u)
        }
        (Some(mut u), Event::MfaEnabled(e)) => {
            u.mfa.enabled = Some(e.secret_nonce.clone());
            u.mfa.pending = None;
            Some(u)
        }
        // Audit facts: a login, or a refused one, changes nothing.
        (Some(u), Event::UserLoggedIn(_) | Event::LoginFailed(_)) => Some(u),
        (state, _) => state,
    }
}
