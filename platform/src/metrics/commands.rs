//! What the edge and the command service both count: each `POST /v1/commands` by command type
//! and what became of it, with its latency per type, and each sign-in by outcome.
//!
//! The command's type is known only inside the handler, once the body is read; the handler
//! puts it in the response's extensions ([`tag`]) and the [`track`] middleware around the route
//! reads it with the status. A request refused before its type is read (no token, a body that
//! is not JSON) counts under `type="unknown"`.

use super::{Counter, Exposition, Histogram};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use domain::command::CommandKind;
use std::sync::Arc;
use std::time::Instant;

/// The statuses a command's answer may have, each counted apart; any other counts as `other`.
const STATUSES: [(u16, &str); 12] = [
    (200, "200"),
    (201, "201"),
    (400, "400"),
    (401, "401"),
    (403, "403"),
    (404, "404"),
    (409, "409"),
    (413, "413"),
    (422, "422"),
    (429, "429"),
    (500, "500"),
    (503, "503"),
];
const OTHER_STATUS: usize = STATUSES.len();

/// What the status says became of a command: 201 recorded, 200 the same `command_id` again,
/// 4xx refused (nothing recorded, the client's to fix), 5xx failed (nothing recorded, try
/// again).
fn outcome(status: u16) -> &'static str {
    match status {
        201 => "recorded",
        200 => "repeated",
        400..=499 => "refused",
        500..=599 => "failed",
        _ => "other",
    }
}

/// Every command type, and `unknown` for requests refused before their type was read.
fn type_label(index: usize) -> &'static str {
    CommandKind::ALL
        .get(index)
        .map_or("unknown", |kind| kind.as_str())
}

const UNKNOWN_TYPE: usize = CommandKind::ALL.len();

/// Commands by type and status, and their latency by type.
#[derive(Debug)]
pub struct CommandMetrics {
    /// `[type][status]`, the last type `unknown`, the last status `other`.
    answered: Box<[[Counter; STATUSES.len() + 1]]>,
    latency: Box<[Histogram]>,
}

impl Default for CommandMetrics {
    fn default() -> Self {
        CommandMetrics {
            answered: (0..=UNKNOWN_TYPE).map(|_| Default::default()).collect(),
            latency: (0..=UNKNOWN_TYPE).map(|_| Histogram::latency()).collect(),
        }
    }
}

impl CommandMetrics {
    /// Counts one answered command.
    pub fn observe(&self, kind: Option<CommandKind>, status: u16, took: std::time::Duration) {
        let kind = kind.map_or(UNKNOWN_TYPE, |k| k as usize);
        let status = STATUSES
            .iter()
            .position(|(s, _)| *s == status)
            .unwrap_or(OTHER_STATUS);
        self.answered[kind][status].inc();
        self.latency[kind].observe_duration(took);
    }

    /// Writes `hms_commands_total` and `hms_command_duration_seconds`: the series of the types
    /// that have had a command.
    pub fn write(&self, text: &mut Exposition) {
        let mut family = text.counter(
            "hms_commands_total",
            "Commands answered, by type, outcome (recorded, repeated, refused, failed) and HTTP status",
        );
        for (kind, counters) in self.answered.iter().enumerate() {
            for (index, counter) in counters.iter().enumerate() {
                let count = counter.get();
                if count == 0 {
                    continue;
                }
                let (code, status) = STATUSES.get(index).copied().unwrap_or((0, "other"));
                family.sample(
                    &[
                        ("type", type_label(kind)),
                        ("outcome", outcome(code)),
                        ("status", status),
                    ],
                    count,
                );
            }
        }
        let mut family = text.histogram(
            "hms_command_duration_seconds",
            "Time from a command's request to its answer (durable when recorded), by type",
        );
        for (kind, histogram) in self.latency.iter().enumerate() {
            if histogram.count() > 0 {
                family.histogram(&[("type", type_label(kind))], histogram);
            }
        }
    }
}

/// Marks a command's answer with its type, for [`track`].
pub fn tag(mut response: Response, kind: Option<CommandKind>) -> Response {
    if let Some(kind) = kind {
        response.extensions_mut().insert(kind);
    }
    response
}

/// The middleware of the commands route: times each request and counts its answer.
pub async fn track(
    State(metrics): State<Arc<CommandMetrics>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let response = next.run(request).await;
    let kind = response.extensions().get::<CommandKind>().copied();
    metrics.observe(kind, response.status().as_u16(), started.elapsed());
    response
}

/// How a sign-in ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignIn {
    /// A token was issued.
    Ok,
    /// A wrong password, an unknown user, a deactivated account.
    Refused,
    /// The account needs its TOTP code, and it was missing or wrong.
    MfaRequired,
    /// Too many attempts.
    RateLimited,
    /// Not a sign-in form (400, 422).
    Invalid,
    /// Something on our side (5xx).
    Failed,
}

impl SignIn {
    const ALL: [SignIn; 6] = [
        SignIn::Ok,
        SignIn::Refused,
        SignIn::MfaRequired,
        SignIn::RateLimited,
        SignIn::Invalid,
        SignIn::Failed,
    ];

    fn as_str(self) -> &'static str {
        match self {
            SignIn::Ok => "ok",
            SignIn::Refused => "refused",
            SignIn::MfaRequired => "mfa_required",
            SignIn::RateLimited => "rate_limited",
            SignIn::Invalid => "invalid",
            SignIn::Failed => "failed",
        }
    }
}

/// Sign-ins by outcome.
#[derive(Debug, Default)]
pub struct SignInMetrics {
    counts: [Counter; SignIn::ALL.len()],
}

impl SignInMetrics {
    pub fn observe(&self, outcome: SignIn) {
        self.counts[outcome as usize].inc();
    }

    /// Writes `hms_sign_ins_total`, every outcome (zeros too: a rate of refusals needs its
    /// series before the first one).
    pub fn write(&self, text: &mut Exposition) {
        let mut family = text.counter(
            "hms_sign_ins_total",
            "Sign-ins (POST /v1/auth/login) by outcome",
        );
        for outcome in SignIn::ALL {
            family.sample(
                &[("outcome", outcome.as_str())],
                self.counts[outcome as usize].get(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn commands_are_counted_by_type_outcome_and_status() {
        let metrics = CommandMetrics::default();
        let ms = Duration::from_millis(1);
        metrics.observe(Some(CommandKind::RegisterPatient), 201, ms);
        metrics.observe(Some(CommandKind::RegisterPatient), 201, ms);
        metrics.observe(Some(CommandKind::RegisterPatient), 200, ms);
        metrics.observe(Some(CommandKind::CancelAppointment), 409, ms);
        metrics.observe(None, 401, ms);
        metrics.observe(None, 418, ms);
        let mut text = Exposition::new();
        metrics.write(&mut text);
        let text = text.finish();
        let samples = super::super::parse(&text).unwrap();
        let count = |kind: &str, outcome: &str, status: &str| {
            samples.get(
                "hms_commands_total",
                &[("type", kind), ("outcome", outcome), ("status", status)],
            )
        };
        assert_eq!(count("RegisterPatient", "recorded", "201"), Some(2.0));
        assert_eq!(count("RegisterPatient", "repeated", "200"), Some(1.0));
        assert_eq!(count("CancelAppointment", "refused", "409"), Some(1.0));
        assert_eq!(count("unknown", "refused", "401"), Some(1.0));
        assert_eq!(count("unknown", "other", "other"), Some(1.0));
        assert_eq!(count("RegisterHospital", "recorded", "201"), None);
        assert_eq!(
            samples.get(
                "hms_command_duration_seconds_count",
                &[("type", "RegisterPatient")]
            ),
            Some(3.0)
        );
    }

    #[test]
    fn every_sign_in_outcome_has_its_series() {
        let metrics = SignInMetrics::default();
        metrics.observe(SignIn::MfaRequired);
        let mut text = Exposition::new();
        metrics.write(&mut text);
        let samples = super::super::parse(&text.finish()).unwrap();
        assert_eq!(
            samples.get("hms_sign_ins_total", &[("outcome", "mfa_required")]),
            Some(1.0)
        );
        assert_eq!(
            samples.get("hms_sign_ins_total", &[("outcome", "rate_limited")]),
            Some(0.0)
        );
    }
}
