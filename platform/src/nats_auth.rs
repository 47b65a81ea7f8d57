//! The production NATS server configuration: who may connect, and what each may do. Rendered
//! here so that `nats/server.conf`, `nats/edges.example.conf`, `hms nats-config` and the test
//! that starts `nats-server` with them (`tests/nats_permissions.rs`) are one thing.
//!
//! Three kinds of account (names for the default prefix `hms`):
//!
//! - `HMS` holds JetStream: every stream and bucket. Its one user, `central` (command
//!   service, projectors, query API), may do everything there, and is the only one that creates
//!   streams, buckets and consumers, the edges' consumers included.
//! - `HMS_EDGE_<node>`, one account per edge, user `edge-<node>`. It imports from `HMS` only
//!   what that edge needs: publishing its own hospital's events, reading its own three
//!   consumers ([`Names::edge_feeds`]), writing its own sync-status key and reading its own
//!   confirmed mark. Its user may publish only to those imports and subscribe only to its own
//!   inbox prefix ([`Names::edge_inbox`]).
//! - `HMS_ANALYSTS`, user `analyst`: the core subjects `hms.public.>` and, to replay the
//!   anonymised history, `STREAM.INFO` and `STREAM.MSG.GET` on `HMS_PUBLIC`. Nothing else.
//!
//! Why accounts and not only subject permissions in one account (each measured on nats-server
//! 2.9.10, and checked by the test):
//!
//! - The server answers JetStream calls and acknowledgements on the *reply subject the caller
//!   chose*, and pull requests deliver stream messages there, without checking the caller's
//!   permissions. In one account, an edge allowed to publish `hms.events.<own>.x` could name
//!   `$KV.HMS_SYNC_STATUS.<other node>` as the reply and have the acknowledgement stored as
//!   that node's status; and a pull of its own consumer answered to `hms.public.x` stored its
//!   own event, bytes it chose, in `HMS_PUBLIC` for analysts to read. Replies to a request
//!   that crossed a service import come back into the requester's own account, where no
//!   stream lives.
//! - A consumer's push delivery subject is not checked against the permissions of whoever
//!   creates it (nats-server issue #8274), and no subject permission sees it: it is in the body
//!   of the request. So no one but `central` creates consumers.
//! - `STREAM.INFO` with a `subjects_filter` lists every subject of a stream with its count:
//!   for `HMS_EVENTS`, every hospital's aggregate ids. Edges get no `STREAM.INFO` on it.
//! - An account without JetStream answers `$JS.API.>` itself ("JetStream not enabled"),
//!   racing an import of the same subject; so the API subjects are imported under
//!   [`Names::jetstream_api_prefix`] instead.

use crate::streams::{self, EdgeFeed, Names};
use std::fmt::Write as _;

/// The user of the central services.
pub const CENTRAL_USER: &str = "central";
/// The analysts' user.
pub const ANALYST_USER: &str = "analyst";
/// The inbox prefix of the analysts' connections (`ConnectOptions::custom_inbox_prefix`).
pub const ANALYST_INBOX: &str = "_INBOX_analyst";
/// The environment variable that gives `nats-server` the central user's bcrypt hash when the
/// configuration refers to it instead of holding it (as `nats/server.conf` does).
pub const CENTRAL_PASSWORD_ENV: &str = "HMS_NATS_CENTRAL_PASSWORD_HASH";
/// The same for the analysts' user.
pub const ANALYST_PASSWORD_ENV: &str = "HMS_NATS_ANALYST_PASSWORD_HASH";
/// The file of edge accounts that `nats/server.conf` includes, beside it.
pub const EDGES_FILE: &str = "edges.conf";
/// The bcrypt cost of [`hash_password`], as `nats server passwd` uses.
pub const BCRYPT_COST: u32 = 11;
/// bcrypt reads no more than this many bytes of a password.
pub const MAX_PASSWORD_BYTES: usize = 72;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{what} {value:?} must be 1 to 64 letters, digits, `-` or `_`")]
    BadId { what: &'static str, value: String },
    #[error(
        "the password hash of {who} is not a bcrypt hash (`$2a$`, `$2b$` or `$2y$`, a two-digit cost, `$`, 53 characters); `hms nats-config --hash-password` makes one"
    )]
    BadHash { who: String },
    #[error("{what} {value:?} may not contain quotes, backslashes, `$` or control characters")]
    BadValue { what: &'static str, value: String },
    #[error("edge {0} is listed more than once")]
    DuplicateEdge(String),
    #[error("{0}")]
    BadEdge(String),
    #[error("a password is 1 to {MAX_PASSWORD_BYTES} bytes (bcrypt ignores the rest)")]
    BadPassword,
}

/// One edge: its node id, the hospital it belongs to, and the bcrypt hash of its password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EdgeUser {
    pub node_id: String,
    pub hospital_id: String,
    pub password_hash: String,
}

impl EdgeUser {
    /// `NODE:HOSPITAL:HASH`, as `hms nats-config --edge` takes it.
    pub fn parse(spec: &str) -> Result<EdgeUser, ConfigError> {
        let mut parts = spec.splitn(3, ':');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(node), Some(hospital), Some(hash)) => EdgeUser::new(node, hospital, hash),
            _ => Err(ConfigError::BadEdge(format!(
                "{spec:?} is not NODE:HOSPITAL:BCRYPT_HASH"
            ))),
        }
    }

    pub fn new(node_id: &str, hospital_id: &str, password_hash: &str) -> Result<Self, ConfigError> {
        let edge = EdgeUser {
            node_id: node_id.trim().to_owned(),
            hospital_id: hospital_id.trim().to_owned(),
            password_hash: password_hash.trim().to_owned(),
        };
        check_id("node id", &edge.node_id)?;
        check_id("hospital id", &edge.hospital_id)?;
        check_hash(&edge_user(&edge.node_id), &edge.password_hash)?;
        Ok(edge)
    }
}

/// The edges of a file: one a line, `NODE HOSPITAL BCRYPT_HASH` separated by white space;
/// blank lines and lines starting with `#` are skipped.
pub fn parse_edges(text: &str) -> Result<Vec<EdgeUser>, ConfigError> {
    let mut edges = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [node, hospital, hash] = fields[..] else {
            return Err(ConfigError::BadEdge(format!(
                "line {}: expected `NODE HOSPITAL BCRYPT_HASH`",
                n + 1
            )));
        };
        edges.push(
            EdgeUser::new(node, hospital, hash)
                .map_err(|e| ConfigError::BadEdge(format!("line {}: {e}", n + 1)))?,
        );
    }
    Ok(edges)
}

/// The NATS user name of an edge.
pub fn edge_user(node_id: &str) -> String {
    format!("edge-{node_id}")
}

/// The account of an edge.
pub fn edge_account(names: &Names, node_id: &str) -> String {
    format!("{}_EDGE_{node_id}", names.upper())
}

/// The account that holds JetStream and the central user.
pub fn central_account(names: &Names) -> String {
    names.upper()
}

/// The analysts' account.
pub fn analyst_account(names: &Names) -> String {
    format!("{}_ANALYSTS", names.upper())
}

/// A bcrypt hash of `password` in the `$2a$` form, which `nats-server` reads.
pub fn hash_password(password: &str) -> Result<String, ConfigError> {
    if password.is_empty() || password.len() > MAX_PASSWORD_BYTES {
        return Err(ConfigError::BadPassword);
    }
    let hash = bcrypt::hash_with_result(password, BCRYPT_COST)
        .map_err(|_| ConfigError::BadPassword)?
        .format_for_version(bcrypt::Version::TwoA);
    Ok(hash)
}

/// Where a user's password hash comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Password {
    /// Written into the configuration.
    Hash(String),
    /// Read by `nats-server` from this environment variable when it loads the file.
    Env(String),
}

/// Where the edge accounts are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Edges {
    /// In a file beside the configuration, included.
    Include(String),
    /// Written into the configuration.
    Inline(Vec<EdgeUser>),
}

/// What differs between deployments, besides the subject prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerSettings {
    /// `host:port` for clients.
    pub listen: String,
    /// JetStream's storage directory.
    pub store_dir: String,
    pub central_password: Password,
    pub analyst_password: Password,
    pub edges: Edges,
}

impl Default for ServerSettings {
    /// `nats/server.conf`: passwords from the environment, edges from `edges.conf`.
    fn default() -> Self {
        ServerSettings {
            listen: "0.0.0.0:4222".into(),
            store_dir: "/var/lib/nats".into(),
            central_password: Password::Env(CENTRAL_PASSWORD_ENV.into()),
            analyst_password: Password::Env(ANALYST_PASSWORD_ENV.into()),
            edges: Edges::Include(EDGES_FILE.into()),
        }
    }
}

/// One subject an account imports from the central account: `subject` there, `local` here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Import {
    /// A message stream (`hms.public.>`) rather than a request-reply service.
    pub stream: bool,
    pub subject: String,
    pub local: String,
}

impl Import {
    fn service(subject: String) -> Import {
        Import {
            stream: false,
            local: subject.clone(),
            subject,
        }
    }

    /// A JetStream API subject (`$JS.API.<rest>`), imported under the prefix.
    fn api(names: &Names, rest: &str) -> Import {
        Import {
            stream: false,
            subject: format!("$JS.API.{rest}"),
            local: format!("{}.{rest}", names.jetstream_api_prefix()),
        }
    }
}

/// Everything one edge imports; its user may publish to exactly these local subjects.
pub fn edge_imports(names: &Names, node_id: &str, hospital_id: &str) -> Vec<Import> {
    let confirmed = names.confirmed_bucket();
    let status = names.sync_status_bucket();
    let trust = names.trust_bucket();
    let events = names.events_stream();
    let mut imports = vec![
        // Its own hospital's events; the reply is JetStream's acknowledgement.
        Import::service(names.org_subjects(hospital_id)),
        // Its own sync status: async-nats's `Store::put` puts the API prefix in front.
        Import {
            stream: false,
            subject: format!("$KV.{status}.{node_id}"),
            local: format!("{}.$KV.{status}.{node_id}", names.jetstream_api_prefix()),
        },
        // Its own confirmed mark: `Store::get` on a bucket that allows direct gets.
        Import::api(
            names,
            &format!("DIRECT.GET.KV_{confirmed}.$KV.{confirmed}.{node_id}"),
        ),
        // The central token-verifying key, which every edge trusts (public, one key).
        Import::api(
            names,
            &format!(
                "DIRECT.GET.KV_{trust}.$KV.{trust}.{}",
                streams::TRUSTED_JWT_KEY
            ),
        ),
        // `get_key_value` reads the bucket's definition first.
        Import::api(names, &format!("STREAM.INFO.KV_{confirmed}")),
        Import::api(names, &format!("STREAM.INFO.KV_{status}")),
        Import::api(names, &format!("STREAM.INFO.KV_{trust}")),
    ];
    for EdgeFeed { consumer, .. } in names.edge_feeds(node_id, hospital_id) {
        imports.push(Import::api(
            names,
            &format!("CONSUMER.INFO.{events}.{consumer}"),
        ));
        imports.push(Import::api(
            names,
            &format!("CONSUMER.MSG.NEXT.{events}.{consumer}"),
        ));
        // Acknowledgements go to the reply subject of each message, unprefixed.
        imports.push(Import::service(format!("$JS.ACK.{events}.{consumer}.>")));
    }
    imports
}

/// Everything the analysts' account imports.
pub fn analyst_imports(names: &Names) -> Vec<Import> {
    let public = names.public_stream();
    vec![
        Import {
            stream: true,
            subject: names.public_subjects(),
            local: names.public_subjects(),
        },
        Import::api(names, &format!("STREAM.INFO.{public}")),
        Import::api(names, &format!("STREAM.MSG.GET.{public}")),
    ]
}

/// The complete server configuration.
pub fn server_conf(names: &Names, settings: &ServerSettings) -> Result<String, ConfigError> {
    check_value("listen address", &settings.listen)?;
    check_value("store directory", &settings.store_dir)?;
    let central = password(CENTRAL_USER, &settings.central_password)?;
    let analyst = password(ANALYST_USER, &settings.analyst_password)?;
    let hms = central_account(names);
    let analysts = analyst_account(names);
    let events = names.events_stream();
    let confirmed = names.confirmed_bucket();
    let status = names.sync_status_bucket();
    let trust = names.trust_bucket();
    let public = names.public_stream();

    let mut out = String::new();
    let o = &mut out;
    line(
        o,
        0,
        "# The NATS server of the hospital system. Rendered by `hms nats-config` from",
    );
    line(
        o,
        0,
        "# platform/src/nats_auth.rs, which explains each choice; tests/nats_permissions.rs",
    );
    line(
        o,
        0,
        "# starts nats-server with it and checks every permission. Do not edit by hand.",
    );
    line(o, 0, "");
    line(o, 0, &format!("listen: \"{}\"", settings.listen));
    line(o, 0, "jetstream {");
    line(o, 1, &format!("store_dir: \"{}\"", settings.store_dir));
    line(o, 0, "}");
    line(o, 0, "");
    line(o, 0, "accounts {");
    line(
        o,
        1,
        "# Every stream and bucket. `central` (command service, projectors, query API) may do",
    );
    line(
        o,
        1,
        "# everything here, and is the only user that creates streams and consumers.",
    );
    line(o, 1, &format!("{hms}: {{"));
    line(o, 2, "jetstream: enabled");
    line(o, 2, "users: [");
    line(
        o,
        3,
        &format!("{{ user: \"{CENTRAL_USER}\", password: {central} }}"),
    );
    line(o, 2, "]");
    line(o, 2, "exports: [");
    line(
        o,
        3,
        "# For the edge accounts; each imports only its own subjects of these.",
    );
    let api = |rest: String| format!("$JS.API.{rest}");
    for (subject, stream_response) in [
        (names.events_subjects(), false),
        (format!("$KV.{status}.*"), false),
        (
            api(format!("DIRECT.GET.KV_{confirmed}.$KV.{confirmed}.*")),
            false,
        ),
        (
            api(format!(
                "DIRECT.GET.KV_{trust}.$KV.{trust}.{}",
                streams::TRUSTED_JWT_KEY
            )),
            false,
        ),
        (api(format!("STREAM.INFO.KV_{confirmed}")), false),
        (api(format!("STREAM.INFO.KV_{status}")), false),
        (api(format!("STREAM.INFO.KV_{trust}")), false),
        (api(format!("CONSUMER.INFO.{events}.*")), false),
        (api(format!("CONSUMER.MSG.NEXT.{events}.*")), true),
        (format!("$JS.ACK.{events}.>"), false),
    ] {
        let response = if stream_response {
            ", response_type: stream"
        } else {
            ""
        };
        line(o, 3, &format!("{{ service: \"{subject}\"{response} }}"));
    }
    line(o, 3, "# For the analysts.");
    line(
        o,
        3,
        &format!(
            "{{ stream: \"{}\", accounts: [{analysts}] }}",
            names.public_subjects()
        ),
    );
    for rest in [
        format!("STREAM.INFO.{public}"),
        format!("STREAM.MSG.GET.{public}"),
    ] {
        line(
            o,
            3,
            &format!("{{ service: \"{}\", accounts: [{analysts}] }}", api(rest)),
        );
    }
    line(o, 2, "]");
    line(o, 1, "}");
    line(o, 0, "");
    line(
        o,
        1,
        &format!(
            "# Analysts: the anonymised facts on `{}` as they come, and HMS_PUBLIC's history",
            names.public_subjects()
        ),
    );
    line(
        o,
        1,
        &format!(
            "# read message by message (inbox prefix {ANALYST_INBOX}, JetStream API prefix {}).",
            names.jetstream_api_prefix()
        ),
    );
    line(o, 1, &format!("{analysts}: {{"));
    let imports = analyst_imports(names);
    let publish: Vec<String> = imports
        .iter()
        .filter(|i| !i.stream)
        .map(|i| i.local.clone())
        .collect();
    let subscribe = vec![names.public_subjects(), format!("{ANALYST_INBOX}.>")];
    user(o, ANALYST_USER, &analyst, &publish, &subscribe);
    write_imports(o, &hms, &imports);
    line(o, 1, "}");
    line(o, 0, "");
    match &settings.edges {
        Edges::Include(file) => {
            check_value("edges file", file)?;
            line(
                o,
                1,
                "# One account per edge (`hms nats-config --edges-only` renders this file).",
            );
            line(o, 1, &format!("include \"{file}\""));
        }
        Edges::Inline(edges) => out.push_str(&edges_conf(names, edges)?),
    }
    out.push_str("}\n");
    Ok(out)
}

/// The edge accounts, as `nats/server.conf` includes them from `edges.conf`.
pub fn edges_conf(names: &Names, edges: &[EdgeUser]) -> Result<String, ConfigError> {
    let hms = central_account(names);
    let mut seen = std::collections::BTreeSet::new();
    let mut out = String::new();
    line(
        &mut out,
        1,
        "# The edge accounts, one per edge (`hms nats-config --edges-only` renders them); each",
    );
    line(
        &mut out,
        1,
        "# imports from the central account only that edge's own subjects.",
    );
    for edge in edges {
        let edge = EdgeUser::new(&edge.node_id, &edge.hospital_id, &edge.password_hash)?;
        if !seen.insert(edge.node_id.clone()) {
            return Err(ConfigError::DuplicateEdge(edge.node_id));
        }
        let o = &mut out;
        line(
            o,
            1,
            &format!("# Edge {} of hospital {}.", edge.node_id, edge.hospital_id),
        );
        line(
            o,
            1,
            &format!("\"{}\": {{", edge_account(names, &edge.node_id)),
        );
        let imports = edge_imports(names, &edge.node_id, &edge.hospital_id);
        let publish: Vec<String> = imports.iter().map(|i| i.local.clone()).collect();
        let subscribe = vec![format!("{}.>", names.edge_inbox(&edge.node_id))];
        user(
            o,
            &edge_user(&edge.node_id),
            &format!("\"{}\"", edge.password_hash),
            &publish,
            &subscribe,
        );
        write_imports(o, &hms, &imports);
        line(o, 1, "}");
    }
    Ok(out)
}

/// `nats/edges.example.conf`: one made-up edge, to show the shape of `edges.conf`.
pub fn example_edges() -> Vec<EdgeUser> {
    vec![EdgeUser {
        node_id: "0190f0c2-7d1e-7a2b-9c3d-4e5f60718293".into(),
        hospital_id: "0190f0c2-0000-7000-8000-000000000001".into(),
        // The hash of `example-only-do-not-deploy`.
        password_hash: "$2a$11$6TuLHbbXUwFm5Otk1CsK7.bdFVtkpYZjDXugw5nbWquWeDqbkvkVy".into(),
    }]
}

fn user(out: &mut String, name: &str, password: &str, publish: &[String], subscribe: &[String]) {
    line(out, 2, "users: [");
    line(
        out,
        3,
        &format!("{{ user: \"{name}\", password: {password}"),
    );
    line(out, 4, "permissions: {");
    list(out, 5, "publish: { allow: [", publish, "] }");
    list(out, 5, "subscribe: { allow: [", subscribe, "] }");
    line(out, 4, "}");
    line(out, 3, "}");
    line(out, 2, "]");
}

fn write_imports(out: &mut String, from: &str, imports: &[Import]) {
    line(out, 2, "imports: [");
    for import in imports {
        let kind = if import.stream { "stream" } else { "service" };
        let to = if import.local == import.subject {
            String::new()
        } else {
            format!(", to: \"{}\"", import.local)
        };
        line(
            out,
            3,
            &format!(
                "{{ {kind}: {{ account: {from}, subject: \"{}\" }}{to} }}",
                import.subject
            ),
        );
    }
    line(out, 2, "]");
}

fn list(out: &mut String, depth: usize, open: &str, items: &[String], close: &str) {
    line(out, depth, open);
    for item in items {
        line(out, depth + 1, &format!("\"{item}\""));
    }
    line(out, depth, close);
}

fn line(out: &mut String, depth: usize, text: &str) {
    if text.is_empty() {
        out.push('\n');
    } else {
        let _ = writeln!(out, "{:width$}{text}", "", width = depth * 2);
    }
}

fn password(who: &str, password: &Password) -> Result<String, ConfigError> {
    match password {
        Password::Hash(hash) => {
            check_hash(who, hash)?;
            Ok(format!("\"{hash}\""))
        }
        Password::Env(var) => {
            if var.is_empty() || !var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(ConfigError::BadValue {
                    what: "environment variable",
                    value: var.clone(),
                });
            }
            Ok(format!("${var}"))
        }
    }
}

fn check_id(what: &'static str, value: &str) -> Result<(), ConfigError> {
    let valid = !value.is_empty()
        && value.len() <= 64
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if valid {
        Ok(())
    } else {
        Err(ConfigError::BadId {
            what,
            value: value.to_owned(),
        })
    }
}

/// `$2a$11$` and 53 characters of bcrypt's base64 (22 of salt, 31 of hash).
fn check_hash(who: &str, hash: &str) -> Result<(), ConfigError> {
    let bytes = hash.as_bytes();
    let valid = bytes.len() == 60
        && hash.starts_with("$2")
        && matches!(bytes[2], b'a' | b'b' | b'y')
        && bytes[3] == b'$'
        && bytes[4].is_ascii_digit()
        && bytes[5].is_ascii_digit()
        && bytes[6] == b'$'
        && bytes[7..]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'.' || *b == b'/');
    if valid {
        Ok(())
    } else {
        Err(ConfigError::BadHash {
            who: who.to_owned(),
        })
    }
}

/// A value written between double quotes, where `nats-server` would read `\`, `"` or `$`
/// specially.
fn check_value(what: &'static str, value: &str) -> Result<(), ConfigError> {
    let valid = !value.is_empty()
        && !value
            .chars()
            .any(|c| c.is_control() || matches!(c, '"' | '\\' | '$'));
    if valid {
        Ok(())
    } else {
        Err(ConfigError::BadValue {
            what,
            value: value.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "$2a$11$6TuLHbbXUwFm5Otk1CsK7.bdFVtkpYZjDXugw5nbWquWeDqbkvkVy";

    #[test]
    fn an_edge_is_read_from_its_spec_and_checked() {
        let edge = EdgeUser::parse(&format!("node-1:hosp-1:{HASH}")).unwrap();
        assert_eq!(edge.node_id, "node-1");
        assert_eq!(edge.hospital_id, "hosp-1");
        assert_eq!(edge.password_hash, HASH);
        assert!(matches!(
            EdgeUser::parse(&format!("node.1:hosp-1:{HASH}")),
            Err(ConfigError::BadId { .. })
        ));
        assert!(matches!(
            EdgeUser::parse(&format!("node-1:hosp>:{HASH}")),
            Err(ConfigError::BadId { .. })
        ));
        assert!(matches!(
            EdgeUser::parse("node-1:hosp-1:secret"),
            Err(ConfigError::BadHash { .. })
        ));
        assert!(EdgeUser::parse("node-1").is_err());
    }

    #[test]
    fn an_edges_file_skips_comments_and_refuses_a_node_twice() {
        let text = format!("# node hospital hash\n\nn1 h1 {HASH}\n  n2\th1  {HASH}\n");
        let edges = parse_edges(&text).unwrap();
        assert_eq!(edges.len(), 2);
        assert_eq!(edges[1].node_id, "n2");
        assert!(parse_edges("n1 h1").is_err());
        let twice = [edges[0].clone(), edges[0].clone()];
        let names = Names::new("hms").unwrap();
        assert_eq!(
            edges_conf(&names, &twice),
            Err(ConfigError::DuplicateEdge("n1".into()))
        );
    }

    #[test]
    fn a_hash_is_in_the_form_nats_server_reads_and_checks_its_password() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$2a$11$"), "{hash}");
        check_hash("x", &hash).unwrap();
        assert!(bcrypt::verify("correct horse", &hash).unwrap());
        assert!(!bcrypt::verify("wrong horse", &hash).unwrap());
        assert!(bcrypt::verify("example-only-do-not-deploy", HASH).unwrap());
        assert_eq!(hash_password(""), Err(ConfigError::BadPassword));
        assert_eq!(
            hash_password(&"x".repeat(73)),
            Err(ConfigError::BadPassword)
        );
    }

    #[test]
    fn an_edge_may_publish_to_exactly_what_its_account_imports() {
        let names = Names::new("hms").unwrap();
        let imports = edge_imports(&names, "n1", "h1");
        let locals: Vec<&str> = imports.iter().map(|i| i.local.as_str()).collect();
        assert!(locals.contains(&"hms.events.h1.>"));
        assert!(locals.contains(&"$JS.HMS.API.$KV.HMS_SYNC_STATUS.n1"));
        assert!(locals.contains(&"$JS.HMS.API.DIRECT.GET.KV_HMS_CONFIRMED.$KV.HMS_CONFIRMED.n1"));
        assert!(locals.contains(&"$JS.HMS.API.CONSUMER.MSG.NEXT.HMS_EVENTS.edge_n1_org"));
        assert!(locals.contains(&"$JS.ACK.HMS_EVENTS.edge_n1_plans.>"));
        assert!(
            !locals
                .iter()
                .any(|l| l.contains("CREATE") || l.contains("STREAM.INFO.HMS_EVENTS")),
            "{locals:?}"
        );
        let edge = EdgeUser::new("n1", "h1", HASH).unwrap();
        let conf = edges_conf(&names, &[edge]).unwrap();
        for local in locals {
            assert!(conf.contains(&format!("\"{local}\"")), "{local}");
        }
        assert!(conf.contains("\"_INBOX_n1.>\""));
    }

    #[test]
    fn values_that_would_change_the_meaning_of_the_file_are_refused() {
        let names = Names::new("hms").unwrap();
        let mut settings = ServerSettings {
            store_dir: "/tmp/x\" }".into(),
            ..ServerSettings::default()
        };
        assert!(matches!(
            server_conf(&names, &settings),
            Err(ConfigError::BadValue { .. })
        ));
        settings.store_dir = "/var/lib/nats".into();
        settings.central_password = Password::Hash("plain".into());
        assert!(matches!(
            server_conf(&names, &settings),
            Err(ConfigError::BadHash { .. })
        ));
        settings.central_password = Password::Env("X; y".into());
        assert!(server_conf(&names, &settings).is_err());
    }
}
