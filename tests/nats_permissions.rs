//! The production NATS configuration (`nats/`, rendered by `platform::nats_auth`) against a
//! real `nats-server` (2.9, as Debian ships it): each user can do its work, and each forbidden
//! action is refused. A refusal counts only when the server said so (a permissions violation
//! reported on the connection) *and* the effect is absent (central looks: no message stored, no
//! consumer made, no key written, nothing received).

use async_nats::jetstream::{self, consumer, kv};
use futures::StreamExt;
use platform::nats_auth::{self, EdgeUser, Password, ServerSettings};
use platform::streams::{self, Names};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

// The test server's port helper (its NatsServer is not used here: this file starts nats-server
// with a configuration file).
#[path = "../edge-agent/tests/support/nats.rs"]
mod nats;

use nats::free_port;

/// Every wait is bounded: a refused request is over in a few seconds.
const WAIT: Duration = Duration::from_secs(3);

fn nats_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("nats")
}

// ---------------------------------------------------------------------------------------------
// The files in `nats/` are what the code renders.

#[test]
fn the_files_in_nats_are_what_the_code_renders() {
    let names = Names::new("hms").unwrap();
    let server = nats_auth::server_conf(&names, &ServerSettings::default()).unwrap();
    let edges = nats_auth::edges_conf(&names, &nats_auth::example_edges()).unwrap();
    for (file, rendered) in [("server.conf", server), ("edges.example.conf", edges)] {
        let text = std::fs::read_to_string(nats_dir().join(file)).unwrap();
        assert!(
            text == rendered,
            "nats/{file} is out of date; `hms nats-config` renders it as:\n{rendered}"
        );
    }
}

#[test]
fn hms_nats_config_prints_the_files_and_makes_hashes_nats_server_reads() {
    let hms = |args: &[&str], stdin: Option<&str>| {
        use std::io::Write;
        let mut child = Command::new(env!("CARGO_BIN_EXE_hms"))
            .arg("nats-config")
            .args(args)
            .env_remove("HMS_SUBJECT_PREFIX")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
        drop(input);
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (ok, server, err) = hms(&[], None);
    assert!(ok, "{err}");
    assert_eq!(
        server,
        std::fs::read_to_string(nats_dir().join("server.conf")).unwrap()
    );

    let (ok, hash, err) = hms(&["--hash-password"], Some("s3cret pass\n"));
    assert!(ok, "{err}");
    let hash = hash.trim();
    assert!(hash.starts_with("$2a$11$"), "{hash}");

    let dir = tempfile::tempdir().unwrap();
    let edges_file = dir.path().join("edges.txt");
    let example = &nats_auth::example_edges()[0];
    std::fs::write(
        &edges_file,
        format!(
            "# node hospital hash\n{} {} {}\n",
            example.node_id, example.hospital_id, example.password_hash
        ),
    )
    .unwrap();
    let (ok, edges, err) = hms(
        &["--edges-only", "--edges-file", edges_file.to_str().unwrap()],
        None,
    );
    assert!(ok, "{err}");
    assert_eq!(
        edges,
        std::fs::read_to_string(nats_dir().join("edges.example.conf")).unwrap()
    );

    // A complete file, edges written in: nats-server starts with it and the hash made above
    // lets `central` in (and only with its password).
    let port = free_port();
    let store = dir.path().join("js");
    let edge = format!("node-1:hosp-1:{hash}");
    let (ok, complete, err) = hms(
        &[
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--store-dir",
            store.to_str().unwrap(),
            "--central-password-hash",
            hash,
            "--analyst-password-hash",
            hash,
            "--edge",
            &edge,
        ],
        None,
    );
    assert!(ok, "{err}");
    assert!(!complete.contains("include"), "{complete}");
    assert!(complete.contains("\"HMS_EDGE_node-1\""), "{complete}");
    let file = dir.path().join("complete.conf");
    std::fs::write(&file, &complete).unwrap();
    let server = NatsServer::start(&file, port, &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        connect(&server, "central", "s3cret pass", None).await;
        connect(&server, "edge-node-1", "s3cret pass", Some("_INBOX_node-1")).await;
        assert!(try_connect(&server, "central", "wrong").await.is_err());
    });

    let (ok, _, err) = hms(&["--edge", "node-1:hosp-1:plaintext"], None);
    assert!(!ok);
    assert!(err.contains("bcrypt"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Each permission, against nats-server started with the rendered configuration.

/// nats-server started with `nats/server.conf` as it ships (passwords from the environment,
/// edges included from `edges.conf` beside it), but listening on a free port and storing in a
/// temporary directory, which lives as long as the returned guard. Central's password is
/// `central-secret`, the analyst's `analyst-secret`.
fn production_server(names: &Names, edges: &[EdgeUser]) -> (tempfile::TempDir, NatsServer) {
    production_server_edited(names, edges, |conf| conf)
}

/// [`production_server`] with the edges' configuration passed through `edit` first.
fn production_server_edited(
    names: &Names,
    edges: &[EdgeUser],
    edit: impl FnOnce(String) -> String,
) -> (tempfile::TempDir, NatsServer) {
    let hash = |p: &str| nats_auth::hash_password(p).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let settings = ServerSettings {
        listen: format!("127.0.0.1:{port}"),
        store_dir: dir.path().join("js").to_str().unwrap().to_owned(),
        ..ServerSettings::default()
    };
    assert_eq!(
        settings.central_password,
        Password::Env(nats_auth::CENTRAL_PASSWORD_ENV.into())
    );
    let conf = dir.path().join("server.conf");
    std::fs::write(&conf, nats_auth::server_conf(names, &settings).unwrap()).unwrap();
    std::fs::write(
        dir.path().join(nats_auth::EDGES_FILE),
        edit(nats_auth::edges_conf(names, edges).unwrap()),
    )
    .unwrap();
    let server = NatsServer::start(
        &conf,
        port,
        &[
            (nats_auth::CENTRAL_PASSWORD_ENV, hash("central-secret")),
            (nats_auth::ANALYST_PASSWORD_ENV, hash("analyst-secret")),
        ],
    );
    (dir, server)
}

#[tokio::test]
async fn each_user_can_do_its_work_and_nothing_else() {
    let names = Names::new("hms").unwrap();
    let hospital_a = Uuid::now_v7().to_string();
    let hospital_b = Uuid::now_v7().to_string();
    let insurer = Uuid::now_v7().to_string();
    let node_a = Uuid::now_v7().to_string();
    let node_b = Uuid::now_v7().to_string();
    let hash = |p: &str| nats_auth::hash_password(p).unwrap();
    let edges = vec![
        EdgeUser::new(&node_a, &hospital_a, &hash("edge-a-secret")).unwrap(),
        EdgeUser::new(&node_b, &hospital_b, &hash("edge-b-secret")).unwrap(),
    ];

    let (_dir, server) = production_server(&names, &edges);

    // --- who may connect -----------------------------------------------------------------
    assert!(try_connect(&server, "", "").await.is_err(), "anonymous");
    assert!(
        try_connect(&server, "central", "edge-a-secret")
            .await
            .is_err(),
        "central with another user's password"
    );
    assert!(
        try_connect(&server, &nats_auth::edge_user(&node_b), "edge-a-secret")
            .await
            .is_err(),
        "edge B with edge A's password"
    );

    // --- central: creates the streams, buckets and the edges' consumers, publishes anywhere --
    let (central, _central_events) = connect(&server, "central", "central-secret", None).await;
    let cjs = jetstream::context::ContextBuilder::new()
        .timeout(WAIT)
        .build(central.clone());
    let window = streams::DEFAULT_DUPLICATE_WINDOW;
    streams::ensure_events_stream(&cjs, &names, window)
        .await
        .unwrap();
    streams::ensure_public_stream(&cjs, &names, window)
        .await
        .unwrap();
    let confirmed = streams::ensure_bucket(&cjs, streams::confirmed_bucket_config(&names))
        .await
        .unwrap();
    let status = streams::ensure_bucket(&cjs, streams::sync_status_bucket_config(&names))
        .await
        .unwrap();
    let trust = streams::ensure_bucket(&cjs, streams::trust_bucket_config(&names))
        .await
        .unwrap();
    trust
        .put(streams::TRUSTED_JWT_KEY, "central key".into())
        .await
        .unwrap();
    trust.put("other", "not for edges".into()).await.unwrap();
    for edge in &edges {
        streams::ensure_edge_consumers(&cjs, &names, &edge.node_id, &edge.hospital_id)
            .await
            .unwrap();
    }
    // Again: nothing changes.
    streams::ensure_edge_consumers(&cjs, &names, &node_a, &hospital_a)
        .await
        .unwrap();
    let b_secret = format!("hms.events.{hospital_b}.patient.{}", Uuid::now_v7());
    let plan = format!("hms.events.{insurer}.plan.{}", Uuid::now_v7());
    for (subject, body) in [
        (b_secret.as_str(), "hospital B's patient"),
        (plan.as_str(), "a plan"),
        ("hms.public.w1", "week 1"),
    ] {
        publish_acked(&cjs, subject, body).await;
    }
    confirmed.put(&node_a, "41".into()).await.unwrap();
    confirmed.put(&node_b, "7".into()).await.unwrap();
    let events_stream = cjs.get_stream(names.events_stream()).await.unwrap();
    let public_stream = cjs.get_stream(names.public_stream()).await.unwrap();
    let consumers_before = consumer_names(&events_stream).await;
    assert_eq!(consumers_before.len(), 6, "{consumers_before:?}");

    // --- edge A ------------------------------------------------------------------------------
    let inbox_a = names.edge_inbox(&node_a);
    let (edge, events) = connect(
        &server,
        &nats_auth::edge_user(&node_a),
        "edge-a-secret",
        Some(&inbox_a),
    )
    .await;
    let js = jetstream::context::ContextBuilder::new()
        .timeout(WAIT)
        .api_prefix(names.jetstream_api_prefix())
        .build(edge.clone());

    // Publishes its own hospital's events, and the acknowledgement comes back.
    let own = format!("hms.events.{hospital_a}.patient.{}", Uuid::now_v7());
    let ack = publish_acked(&js, &own, "hospital A's patient").await;
    assert_eq!(ack.stream, names.events_stream());

    // Not another hospital's.
    let forged = format!("hms.events.{hospital_b}.patient.{}", Uuid::now_v7());
    denied(&events, "Publish", &forged, publish(&js, &forged, "forged")).await;
    assert_not_stored(&events_stream, &forged).await;

    // Nor any other stream or bucket, core or JetStream.
    for subject in [
        "hms.public.w1".to_owned(),
        format!("$KV.{}.{node_a}", names.confirmed_bucket()),
        format!(
            "{}.$KV.{}.{node_a}",
            names.jetstream_api_prefix(),
            names.confirmed_bucket()
        ),
    ] {
        edge.publish(subject.clone(), "forged".into())
            .await
            .unwrap();
        edge.flush().await.unwrap();
        events.expect_violation("Publish", &subject).await;
    }
    assert_eq!(
        public_stream.clone().info().await.unwrap().state.messages,
        1,
        "only central's week 1"
    );
    assert_eq!(
        confirmed.get(&node_a).await.unwrap().as_deref(),
        Some(&b"41"[..])
    );

    // Reads its own feeds, which central made: its hospital's events, and the plans of all.
    let org = names.edge_consumer(&node_a, "org");
    let got = fetch(&js, &names, &org, 1).await;
    assert_eq!(got, vec![own.clone()], "only its own hospital's events");
    let plans = names.edge_consumer(&node_a, "plans");
    assert_eq!(fetch(&js, &names, &plans, 1).await, vec![plan.clone()]);
    let org_info = cjs
        .get_consumer_from_stream::<consumer::pull::Config, _, _>(&org, names.events_stream())
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .clone();
    assert_eq!(org_info.num_ack_pending, 0, "its acknowledgements arrived");
    assert_eq!(org_info.ack_floor.stream_sequence, ack.sequence);

    // Not another edge's consumer.
    let org_b = names.edge_consumer(&node_b, "org");
    denied(
        &events,
        "Publish",
        &format!("CONSUMER.INFO.HMS_EVENTS.{org_b}"),
        js.get_consumer_from_stream::<consumer::pull::Config, _, _>(&org_b, names.events_stream()),
    )
    .await;
    let next_b = format!(
        "{}.CONSUMER.MSG.NEXT.HMS_EVENTS.{org_b}",
        names.jetstream_api_prefix()
    );
    let mut inbox = edge.subscribe(format!("{inbox_a}.pull")).await.unwrap();
    edge.publish_with_reply(
        next_b.clone(),
        format!("{inbox_a}.pull"),
        "{\"batch\":10}".into(),
    )
    .await
    .unwrap();
    edge.flush().await.unwrap();
    events.expect_violation("Publish", &next_b).await;
    assert_nothing_arrives(&mut inbox).await;

    // Creates no consumer at all: not its own name with its own filter, not every event, not
    // another hospital's, and not through the unprefixed API either.
    let unprefixed = jetstream::context::ContextBuilder::new()
        .timeout(WAIT)
        .build(edge.clone());
    for (ctx, name, filter) in [
        (&js, org.clone(), names.org_subjects(&hospital_a)),
        (&js, format!("edge_{node_a}_all"), names.events_subjects()),
        (&js, org.clone(), names.org_subjects(&hospital_b)),
        (&js, "spy".to_owned(), names.org_subjects(&hospital_b)),
        (&unprefixed, org.clone(), names.events_subjects()),
    ] {
        let config = consumer::pull::Config {
            durable_name: Some(name.clone()),
            name: Some(name.clone()),
            filter_subject: filter.clone(),
            ..Default::default()
        };
        denied(
            &events,
            "Publish",
            &format!("CONSUMER.CREATE.HMS_EVENTS.{name}.{filter}"),
            ctx.create_consumer_on_stream(config, names.events_stream()),
        )
        .await;
    }
    // An ephemeral one, or one through the legacy durable subject.
    denied(
        &events,
        "Publish",
        "CONSUMER.CREATE.HMS_EVENTS\"",
        js.create_consumer_on_stream(
            consumer::pull::Config {
                filter_subject: names.events_subjects(),
                ..Default::default()
            },
            names.events_stream(),
        ),
    )
    .await;
    let legacy = format!(
        "{}.CONSUMER.DURABLE.CREATE.HMS_EVENTS.spy",
        names.jetstream_api_prefix()
    );
    edge.publish(legacy.clone(), "{}".into()).await.unwrap();
    edge.flush().await.unwrap();
    events.expect_violation("Publish", &legacy).await;
    assert_eq!(consumer_names(&events_stream).await, consumers_before);
    let org_after = cjs
        .get_consumer_from_stream::<consumer::pull::Config, _, _>(&org, names.events_stream())
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .clone();
    assert_eq!(
        org_after.config.filter_subject,
        names.org_subjects(&hospital_a),
        "its consumer is as central made it"
    );

    // Reads no message of the events stream directly, and not its information (which lists
    // every subject, so every hospital's aggregate ids).
    let raw_events = js.get_stream_no_info(names.events_stream()).await.unwrap();
    denied(
        &events,
        "Publish",
        "DIRECT.GET.HMS_EVENTS\"",
        raw_events.direct_get(1),
    )
    .await;
    denied(
        &events,
        "Publish",
        "STREAM.MSG.GET.HMS_EVENTS\"",
        raw_events.get_raw_message(1),
    )
    .await;
    denied(
        &events,
        "Publish",
        &format!("DIRECT.GET.HMS_EVENTS.{b_secret}"),
        raw_events.direct_get_last_for_subject(&b_secret),
    )
    .await;
    denied(
        &events,
        "Publish",
        "STREAM.INFO.HMS_EVENTS\"",
        js.get_stream(names.events_stream()),
    )
    .await;

    // Creates, changes, purges and deletes no stream: central makes them first. (So the edge's
    // own `ensure_events_stream` fails: it may not even read the stream's information.)
    refused(streams::ensure_events_stream(&js, &names, window)).await;
    denied(
        &events,
        "Publish",
        "STREAM.PURGE.HMS_EVENTS\"",
        raw_events.purge().into_future(),
    )
    .await;
    denied(
        &events,
        "Publish",
        "STREAM.DELETE.HMS_EVENTS\"",
        js.delete_stream(names.events_stream()),
    )
    .await;
    let definition = streams::events_config(&names, window);
    denied(
        &events,
        "Publish",
        "STREAM.CREATE.HMS_EVENTS\"",
        js.create_stream(definition.clone()),
    )
    .await;
    denied(
        &events,
        "Publish",
        "STREAM.UPDATE.HMS_EVENTS\"",
        js.update_stream(definition),
    )
    .await;
    denied(
        &events,
        "Publish",
        "STREAM.CREATE.SPY\"",
        js.create_stream(jetstream::stream::Config {
            name: "SPY".into(),
            subjects: vec![names.events_subjects()],
            ..Default::default()
        }),
    )
    .await;
    let events_info = events_stream.clone().info().await.unwrap().clone();
    assert_eq!(events_info.state.messages, 3, "B's, the plan and A's");

    // Writes its own sync status, reads its own confirmed mark, as the edge does (`Store`).
    let status_a = js.get_key_value(names.sync_status_bucket()).await.unwrap();
    status_a.put(&node_a, "{\"ok\":true}".into()).await.unwrap();
    assert_eq!(
        status.get(&node_a).await.unwrap().as_deref(),
        Some(&b"{\"ok\":true}"[..])
    );
    let confirmed_a = js.get_key_value(names.confirmed_bucket()).await.unwrap();
    assert_eq!(
        confirmed_a.get(&node_a).await.unwrap().as_deref(),
        Some(&b"41"[..])
    );
    // Reads the central token key, and nothing else of the trust bucket.
    let trust_a = js.get_key_value(names.trust_bucket()).await.unwrap();
    assert_eq!(
        trust_a
            .get(streams::TRUSTED_JWT_KEY)
            .await
            .unwrap()
            .as_deref(),
        Some(&b"central key"[..])
    );
    denied(
        &events,
        "Publish",
        &format!("$KV.{}.other", names.trust_bucket()),
        trust_a.get("other"),
    )
    .await;
    // Not another node's status, nor its confirmed mark; and its own mark is read-only.
    denied(
        &events,
        "Publish",
        &format!("$KV.HMS_SYNC_STATUS.{node_b}"),
        status_a.put(&node_b, "{\"forged\":true}".into()),
    )
    .await;
    assert_eq!(status.get(&node_b).await.unwrap(), None);
    denied(
        &events,
        "Publish",
        &format!("$KV.HMS_CONFIRMED.{node_b}"),
        confirmed_a.get(&node_b),
    )
    .await;
    denied(
        &events,
        "Publish",
        &format!("$KV.HMS_CONFIRMED.{node_a}"),
        confirmed_a.put(&node_a, "999999".into()),
    )
    .await;
    assert_eq!(
        confirmed.get(&node_a).await.unwrap().as_deref(),
        Some(&b"41"[..])
    );

    // Subscribes to its own inbox only.
    for subject in [
        "hms.events.>".to_owned(),
        format!("hms.events.{hospital_b}.>"),
        format!("hms.events.{hospital_a}.>"),
        "hms.public.>".to_owned(),
        "_INBOX.>".to_owned(),
        format!("{}.>", names.edge_inbox(&node_b)),
        ">".to_owned(),
    ] {
        let mut sub = edge.subscribe(subject.clone()).await.unwrap();
        edge.flush().await.unwrap();
        events.expect_violation("Subscription", &subject).await;
        let after = format!("hms.events.{hospital_b}.patient.{}", Uuid::now_v7());
        publish_acked(&cjs, &after, "later").await;
        central
            .publish(format!("{}.x", names.edge_inbox(&node_b)), "for B".into())
            .await
            .unwrap();
        central
            .publish("_INBOX.x", "for someone".into())
            .await
            .unwrap();
        central.flush().await.unwrap();
        assert_nothing_arrives(&mut sub).await;
    }

    // The server answers on the reply subject the caller names, unchecked; from an edge's own
    // account, those answers cannot reach the central account: not an acknowledgement into
    // another node's status key, not pulled messages into the public stream.
    let replied = format!("hms.events.{hospital_a}.patient.{}", Uuid::now_v7());
    edge.publish_with_reply(
        replied.clone(),
        format!("$KV.HMS_SYNC_STATUS.{node_b}"),
        "mine".into(),
    )
    .await
    .unwrap();
    edge.flush().await.unwrap();
    let deadline = Instant::now() + WAIT;
    while events_stream
        .get_last_raw_message_by_subject(&replied)
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "the event itself is stored");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A pull request for the edge's own consumer, answered to `hms.public.leak`.
    edge.publish_with_reply(
        format!(
            "{}.CONSUMER.MSG.NEXT.HMS_EVENTS.{org}",
            names.jetstream_api_prefix()
        ),
        "hms.public.leak".to_owned(),
        "{\"batch\":10,\"no_wait\":true}".into(),
    )
    .await
    .unwrap();
    // A request answered on the same connection: the server has handled the pull before it.
    js.get_consumer_from_stream::<consumer::pull::Config, _, _>(&org, names.events_stream())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(status.get(&node_b).await.unwrap(), None);
    assert_not_stored(&public_stream, "hms.public.leak").await;
    assert_eq!(
        public_stream.clone().info().await.unwrap().state.messages,
        1
    );

    // --- the analyst -------------------------------------------------------------------------
    let (analyst, aevents) = connect(
        &server,
        nats_auth::ANALYST_USER,
        "analyst-secret",
        Some(nats_auth::ANALYST_INBOX),
    )
    .await;
    let ajs = jetstream::context::ContextBuilder::new()
        .timeout(WAIT)
        .api_prefix(names.jetstream_api_prefix())
        .build(analyst.clone());

    // Receives the anonymised facts as they are published.
    let mut public = analyst.subscribe("hms.public.>").await.unwrap();
    // `flush` only writes; a request answered proves the server has the subscription.
    let history = ajs.get_stream(names.public_stream()).await.unwrap();
    publish_acked(&cjs, "hms.public.w2", "week 2").await;
    let fact = tokio::time::timeout(WAIT, public.next())
        .await
        .expect("the analyst receives hms.public.w2")
        .unwrap();
    assert_eq!(fact.subject.as_str(), "hms.public.w2");
    assert_eq!(&fact.payload[..], b"week 2");

    // Replays their history, message by message.
    assert_eq!(history.cached_info().state.messages, 1);
    let history = ajs.get_stream(names.public_stream()).await.unwrap();
    assert_eq!(history.cached_info().state.messages, 2);
    let first = history.get_raw_message(1).await.unwrap();
    assert_eq!(first.subject.as_str(), "hms.public.w1");
    let second = history.get_raw_message(2).await.unwrap();
    assert_eq!(second.subject.as_str(), "hms.public.w2");
    let by_subject = history
        .get_next_raw_message_by_subject("hms.public.>")
        .await
        .unwrap();
    assert_eq!(by_subject.subject.as_str(), "hms.public.w1");

    // Nothing else: no events, no other inbox, no consumer anywhere (a consumer's delivery
    // subject would let it write into the central account), no direct read of the events.
    for subject in ["hms.events.>", "_INBOX.>", ">"] {
        let mut sub = analyst.subscribe(subject).await.unwrap();
        analyst.flush().await.unwrap();
        aevents.expect_violation("Subscription", subject).await;
        let after = format!("hms.events.{hospital_a}.patient.{}", Uuid::now_v7());
        publish_acked(&cjs, &after, "later").await;
        central
            .publish("_INBOX.x", "for someone".into())
            .await
            .unwrap();
        central.flush().await.unwrap();
        assert_nothing_arrives(&mut sub).await;
    }
    let aunprefixed = jetstream::context::ContextBuilder::new()
        .timeout(WAIT)
        .build(analyst.clone());
    for (ctx, stream, filter) in [
        (&ajs, names.events_stream(), names.events_subjects()),
        (&aunprefixed, names.events_stream(), names.events_subjects()),
        (&ajs, names.public_stream(), names.public_subjects()),
    ] {
        denied(
            &aevents,
            "Publish",
            &format!("CONSUMER.CREATE.{stream}.analysis.{filter}"),
            ctx.create_consumer_on_stream(
                consumer::pull::Config {
                    durable_name: Some("analysis".into()),
                    filter_subject: filter.clone(),
                    ..Default::default()
                },
                &stream,
            ),
        )
        .await;
    }
    assert_eq!(consumer_names(&events_stream).await, consumers_before);
    assert!(consumer_names(&public_stream).await.is_empty());
    let araw = ajs.get_stream_no_info(names.events_stream()).await.unwrap();
    denied(
        &aevents,
        "Publish",
        "STREAM.MSG.GET.HMS_EVENTS\"",
        araw.get_raw_message(1),
    )
    .await;
    denied(
        &aevents,
        "Publish",
        &format!("DIRECT.GET.HMS_EVENTS.{b_secret}"),
        araw.direct_get_last_for_subject(&b_secret),
    )
    .await;
    denied(
        &aevents,
        "Publish",
        "STREAM.INFO.HMS_EVENTS\"",
        ajs.get_stream(names.events_stream()),
    )
    .await;
    // And publishes nothing: no public fact, no event.
    for subject in [
        "hms.public.fake".to_owned(),
        format!("hms.events.{hospital_a}.patient.{}", Uuid::now_v7()),
    ] {
        denied(
            &aevents,
            "Publish",
            &subject,
            publish(&ajs, &subject, "forged"),
        )
        .await;
    }
    assert_not_stored(&public_stream, "hms.public.fake").await;
    assert_eq!(
        public_stream.clone().info().await.unwrap().state.messages,
        2
    );
}

// ---------------------------------------------------------------------------------------------
// Helpers.

/// `nats-server -c <file>`, killed when dropped.
struct NatsServer {
    port: u16,
    child: Child,
    log: PathBuf,
}

impl NatsServer {
    fn start(conf: &Path, port: u16, env: &[(&str, String)]) -> NatsServer {
        let binary = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or("nats-server");
        let log = conf.with_extension("log");
        let mut command = Command::new(binary);
        command
            .arg("-c")
            .arg(conf)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .env_remove(nats_auth::CENTRAL_PASSWORD_ENV)
            .env_remove(nats_auth::ANALYST_PASSWORD_ENV);
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command
            .spawn()
            .expect("nats-server starts (apt-get install nats-server)");
        let mut server = NatsServer { port, child, log };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("nats-server stopped ({status}):\n{}", server.log());
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let log = server.log();
        panic!("nats-server did not listen on {port}:\n{log}");
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Has the server read its configuration files again (SIGHUP), as an operator would after
    /// changing them; permissions change for the connections already open.
    fn reload(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -HUP nats-server");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the server reported on one connection (permission violations among it).
#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<String>>>);

impl Events {
    /// Waits (boundedly) for the server's report that `what` ("Publish", "Subscription") to a
    /// subject containing `subject` was refused, and takes that report off the list (so the
    /// same report does not count twice). `subject` may end in `"` to match the subject's end.
    async fn expect_violation(&self, what: &str, subject: &str) {
        let needle = format!("Permissions Violation for {what} to \"");
        let deadline = Instant::now() + WAIT;
        loop {
            {
                let mut seen = self.0.lock().unwrap();
                let found = seen.iter().position(|e| {
                    e.find(&needle)
                        .is_some_and(|at| e[at + needle.len()..].contains(subject))
                });
                if let Some(at) = found {
                    seen.remove(at);
                    return;
                }
                if Instant::now() > deadline {
                    panic!(
                        "no permissions violation for {what} to {subject:?}; the server said: {seen:#?}"
                    );
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn try_connect(
    server: &NatsServer,
    user: &str,
    password: &str,
) -> Result<async_nats::Client, String> {
    let mut options = async_nats::ConnectOptions::new().connection_timeout(WAIT);
    if !user.is_empty() {
        options = options.user_and_password(user.into(), password.into());
    }
    tokio::time::timeout(WAIT * 2, options.connect(server.url()))
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| e.to_string())
}

async fn connect(
    server: &NatsServer,
    user: &str,
    password: &str,
    inbox: Option<&str>,
) -> (async_nats::Client, Events) {
    let events = Events::default();
    let seen = events.clone();
    let mut options = async_nats::ConnectOptions::new()
        .connection_timeout(WAIT)
        .user_and_password(user.into(), password.into())
        .event_callback(move |event| {
            let seen = seen.clone();
            async move { seen.0.lock().unwrap().push(event.to_string()) }
        });
    if let Some(inbox) = inbox {
        options = options.custom_inbox_prefix(inbox);
    }
    let client = tokio::time::timeout(WAIT * 2, options.connect(server.url()))
        .await
        .unwrap_or_else(|_| panic!("{user} connects in time"))
        .unwrap_or_else(|e| panic!("{user} connects: {e}\n{}", server.log()));
    (client, events)
}

/// A JetStream publish and its acknowledgement, which must arrive.
async fn publish_acked(
    js: &jetstream::Context,
    subject: &str,
    body: &'static str,
) -> jetstream::publish::PublishAck {
    tokio::time::timeout(WAIT, publish(js, subject, body))
        .await
        .unwrap_or_else(|_| panic!("no acknowledgement for {subject} in time"))
        .unwrap_or_else(|e| panic!("publishing {subject}: {e}"))
}

async fn publish(
    js: &jetstream::Context,
    subject: &str,
    body: &'static str,
) -> Result<jetstream::publish::PublishAck, String> {
    js.publish(subject.to_owned(), body.into())
        .await
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())
}

/// The server refuses the request as a permissions violation (reported on the connection);
/// the request must not succeed meanwhile. Done as soon as the report arrives.
async fn denied<T, E: std::fmt::Debug>(
    events: &Events,
    what: &str,
    subject: &str,
    request: impl std::future::Future<Output = Result<T, E>>,
) {
    tokio::select! {
        outcome = tokio::time::timeout(WAIT, request) => {
            if let Ok(Ok(_)) = outcome {
                panic!("a forbidden request succeeded ({what} to {subject})");
            }
            events.expect_violation(what, subject).await;
        }
        () = events.expect_violation(what, subject) => {}
    }
}

/// The request fails (an error, or no answer in time); it must not succeed.
async fn refused<T, E: std::fmt::Debug>(request: impl std::future::Future<Output = Result<T, E>>) {
    match tokio::time::timeout(WAIT, request).await {
        Err(_elapsed) => {}
        Ok(Err(_refused)) => {}
        Ok(Ok(_)) => panic!("a forbidden request succeeded"),
    }
}

async fn assert_not_stored(stream: &jetstream::stream::Stream, subject: &str) {
    assert!(
        stream
            .get_last_raw_message_by_subject(subject)
            .await
            .is_err(),
        "{subject} was stored in {}",
        stream.cached_info().config.name
    );
}

async fn assert_nothing_arrives(sub: &mut async_nats::Subscriber) {
    if let Ok(Some(message)) = tokio::time::timeout(Duration::from_millis(300), sub.next()).await {
        panic!("a message arrived on a refused subscription: {message:?}");
    }
}

async fn consumer_names(stream: &jetstream::stream::Stream) -> Vec<String> {
    let mut names: Vec<String> = stream.consumer_names().map(|n| n.unwrap()).collect().await;
    names.sort();
    names
}

/// The subjects an edge pulls from one of its consumers as its inbound sync does (opening the
/// stream without reading its information, then `get_or_create_consumer` and `messages`):
/// `count` of them, each acknowledged (the server confirming), and then nothing more.
async fn fetch(
    js: &jetstream::Context,
    names: &Names,
    consumer: &str,
    count: usize,
) -> Vec<String> {
    let stream = js.get_stream_no_info(names.events_stream()).await.unwrap();
    let consumer: jetstream::consumer::Consumer<consumer::pull::Config> = tokio::time::timeout(
        WAIT,
        stream.get_or_create_consumer(
            consumer,
            consumer::pull::Config {
                durable_name: Some(consumer.to_owned()),
                ..Default::default()
            },
        ),
    )
    .await
    .expect("consumer info in time")
    .expect("the edge reads its consumer");
    let mut messages = consumer.messages().await.unwrap();
    let mut subjects = Vec::new();
    while subjects.len() < count {
        let message = tokio::time::timeout(WAIT, messages.next())
            .await
            .expect("the next message in time")
            .unwrap()
            .unwrap();
        subjects.push(message.subject.to_string());
        tokio::time::timeout(WAIT, message.double_ack())
            .await
            .expect("acknowledged in time")
            .unwrap();
    }
    if let Ok(Some(more)) = tokio::time::timeout(Duration::from_millis(500), messages.next()).await
    {
        panic!("more than {count} messages: {more:?}");
    }
    subjects
}

// ---------------------------------------------------------------------------------------------
// The edge agent itself, in its own account: everything sync does works through the imports.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_syncs_both_ways_through_its_own_account() {
    use domain::values::{HospitalId, Role};
    let names = Names::new("hms").unwrap();
    let hospital = HospitalId::from_uuid(Uuid::now_v7());
    let node = Uuid::now_v7();
    let edges = edge_user(node, hospital);
    let (_dir, server) = production_server(&names, &edges);

    let (cjs, confirmed, status) = central_for_edge(&server, &names, node, hospital).await;
    let (data, edge) = edge_in_its_account(&server, &names, node, hospital).await;
    let dev = edge_agent::fixture::DevHospital::new(hospital, 1);
    edge.writer.receive(dev.history.clone()).await.unwrap();
    let token = receptionist_token(data.path(), &dev);
    let http = reqwest::Client::new();
    let base = format!("http://{}", edge.addr);
    let patient = Uuid::now_v7();
    let answer = http
        .post(format!("{base}/v1/commands"))
        .bearer_auth(&token)
        .json(
            &serde_json::json!({"command_id": Uuid::now_v7(), "type": "RegisterPatient",
            "patient_id": patient, "name": "Neema Kilonzo", "birth_date": "1990-05-01",
            "sex": "female"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), reqwest::StatusCode::CREATED);

    // Outbound: the event reaches the stream.
    let stream = cjs.get_stream(names.events_stream()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while stream.clone().info().await.unwrap().state.messages < 1 {
        assert!(
            Instant::now() < deadline,
            "the edge's event never arrived\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Inbound: a user registered centrally can sign in at the edge.
    let mut dev_central = dev.central.clone();
    let command: domain::command::Command = domain::command::RegisterUser {
        user_id: domain::values::UserId::from_uuid(Uuid::now_v7()),
        username: domain::values::Username::parse("nurse.neema").unwrap(),
        password_hash: platform::password::hash("ward seven passphrase"),
        display_name: domain::values::Name::parse("Neema Nurse").unwrap(),
        org_id: hospital.into(),
        roles: vec![Role::Nurse],
        patient_id: None,
    }
    .into();
    let user_events = dev_central.record(&dev.admin, &command).unwrap();
    let arriving = user_events.len() as u64;
    for event in user_events {
        cjs.publish(
            event.subject("hms"),
            serde_json::to_vec(&event).unwrap().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    // The confirmed mark, as the audit projector will write it.
    confirmed.put(node.to_string(), "1".into()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let sync_status: serde_json::Value = http
            .get(format!("{base}/v1/sync/status"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        // Signing in before the user is here would count as failures, and five of them lock
        // the name: the login is tried once the user's events are stored.
        let login = if sync_status["inbound_events_stored"].as_u64() >= Some(arriving) {
            http.post(format!("{base}/v1/auth/login"))
                .json(&serde_json::json!({"username": "nurse.neema", "password": "ward seven passphrase"}))
                .send()
                .await
                .unwrap()
                .status()
        } else {
            reqwest::StatusCode::UNAUTHORIZED
        };
        let reported = status.get(node.to_string()).await.unwrap();
        if login == reqwest::StatusCode::OK
            && sync_status["confirmed_node_seq"] == 1
            && sync_status["pending_events"] == 0
            && reported.is_some()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "login {login}, status {sync_status}, reported {reported:?}\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    edge.stop().await.unwrap();
}

/// The one edge user of `node` at `hospital`, password `edge-secret`.
fn edge_user(node: Uuid, hospital: domain::values::HospitalId) -> Vec<EdgeUser> {
    let hash = nats_auth::hash_password("edge-secret").unwrap();
    vec![EdgeUser::new(&node.to_string(), &hospital.to_string(), &hash).unwrap()]
}

/// Central's side of an edge in its own account, made as the command service makes it: the
/// events stream, the confirmed and sync-status buckets (returned with central's context), and
/// the edge's consumers.
async fn central_for_edge(
    server: &NatsServer,
    names: &Names,
    node: Uuid,
    hospital: domain::values::HospitalId,
) -> (jetstream::Context, kv::Store, kv::Store) {
    let (central, _) = connect(server, "central", "central-secret", None).await;
    let cjs = jetstream::new(central);
    streams::ensure_events_stream(&cjs, names, streams::DEFAULT_DUPLICATE_WINDOW)
        .await
        .unwrap();
    let confirmed = streams::ensure_bucket(&cjs, streams::confirmed_bucket_config(names))
        .await
        .unwrap();
    let status = streams::ensure_bucket(&cjs, streams::sync_status_bucket_config(names))
        .await
        .unwrap();
    streams::ensure_edge_consumers(&cjs, names, &node.to_string(), &hospital.to_string())
        .await
        .unwrap();
    (cjs, confirmed, status)
}

/// The edge agent of `node`, syncing through its own NATS user (password `edge-secret`),
/// reporting its status every 200 ms and retrying within 500 ms; its data directory lives as
/// long as the returned guard.
async fn edge_in_its_account(
    server: &NatsServer,
    names: &Names,
    node: Uuid,
    hospital: domain::values::HospitalId,
) -> (tempfile::TempDir, edge_agent::RunningEdge) {
    let data = tempfile::tempdir().unwrap();
    let mut config = edge_agent::EdgeConfig::new(data.path().to_owned());
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.node_id = Some(node);
    config.hospital_id = Some(hospital.as_uuid());
    let mut sync = edge_agent::sync::SyncConfig::new(server.url(), names.clone());
    sync.credentials = Some((
        nats_auth::edge_user(&node.to_string()),
        "edge-secret".into(),
    ));
    sync.status_interval = Duration::from_millis(200);
    sync.max_backoff = Duration::from_millis(500);
    config.sync = Some(sync);
    let edge = edge_agent::start(config).await.unwrap();
    (data, edge)
}

/// A receptionist's token of the development hospital, signed with the edge's own key.
fn receptionist_token(data_dir: &Path, dev: &edge_agent::fixture::DevHospital) -> String {
    use domain::values::Role;
    platform::keys::resolve_jwt_keys(None, None, data_dir)
        .and_then(|f| f.load())
        .unwrap()
        .signer()
        .unwrap()
        .mint(&platform::token::Claims::new(
            dev.user(Role::Receptionist),
            dev.hospital_id.into(),
            vec![Role::Receptionist],
            None,
            600,
            platform::token::unix_now(),
        ))
}

// ---------------------------------------------------------------------------------------------
// A feed that hears nothing: the edge's status says so until it delivers again.

/// An edge in production may not make its consumers, so one that sends nothing, not even a
/// heartbeat (nats-server 2.9.10 was seen to leave a consumer so; nats/README.md), is not
/// mended at the edge: its sync status, the status it reports centrally and its metrics name
/// the feed until the feed delivers again, and the command service, reading that report, makes
/// the consumer again (once in its cooldown). Here the edge's account may look its plans
/// consumer up but not pull from it, which the edge sees exactly as such a consumer (and which
/// making the consumer again does not mend); the operator's fix, a changed configuration read
/// again, ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_that_sends_nothing_shows_as_stuck_and_is_made_again_centrally() {
    use domain::values::HospitalId;
    let names = Names::new("hms").unwrap();
    let hospital = HospitalId::from_uuid(Uuid::now_v7());
    let node = Uuid::now_v7();
    let edges = edge_user(node, hospital);
    let plans_pull = format!(
        "\"$JS.HMS.API.CONSUMER.MSG.NEXT.{}.{}\"",
        names.events_stream(),
        names.edge_consumer(&node.to_string(), "plans")
    );
    let without_plans_pull = |conf: String| {
        assert!(conf.contains(&plans_pull), "{conf}");
        let kept: Vec<&str> = conf.lines().filter(|l| l.trim() != plans_pull).collect();
        kept.join("\n") + "\n"
    };
    let (dir, server) = production_server_edited(&names, &edges, without_plans_pull);

    let (cjs, _, status) = central_for_edge(&server, &names, node, hospital).await;
    let plans_consumer = names.edge_consumer(&node.to_string(), "plans");
    let plans_made_at = || async {
        cjs.get_consumer_from_stream::<consumer::Config, _, _>(
            &plans_consumer,
            names.events_stream(),
        )
        .await
        .unwrap()
        .cached_info()
        .created
    };
    let first_made_at = plans_made_at().await;
    let central_data = tempfile::tempdir().unwrap();
    let mut central_config =
        command_service::Config::new(central_data.path().to_owned(), names.clone());
    central_config.listen = "127.0.0.1:0".parse().unwrap();
    central_config.nats_url = server.url();
    central_config.credentials = Some(("central".into(), "central-secret".into()));
    let command_service = command_service::start(central_config).await.unwrap();
    // The hospital's history, its insurer and the insurer's plan, as central has them.
    let dev = edge_agent::fixture::DevHospital::new(hospital, 1);
    for event in &dev.history {
        cjs.publish(
            event.subject("hms"),
            serde_json::to_vec(event).unwrap().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }

    let (data, edge) = edge_in_its_account(&server, &names, node, hospital).await;
    let db = edge_agent::EdgeConfig::new(data.path().to_owned()).db_path();
    let token = receptionist_token(data.path(), &dev);
    let http = reqwest::Client::new();
    let base = format!("http://{}", edge.addr);
    let sync_status = || async {
        http.get(format!("{base}/v1/sync/status"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap()
    };
    let scrape = async |url: String| {
        let text = http.get(url).send().await.unwrap().text().await.unwrap();
        text.lines().map(str::to_owned).collect::<Vec<String>>()
    };
    let stuck_gauge = async || {
        scrape(format!("{base}/metrics"))
            .await
            .iter()
            .find_map(|l| l.strip_prefix("hms_sync_feeds_stuck ").map(str::to_owned))
    };
    let reported = || async {
        status
            .get(node.to_string())
            .await
            .unwrap()
            .map(|r| serde_json::from_slice::<serde_json::Value>(&r).unwrap())
    };
    // Waits (up to 60 s) until the edge's status and the report central has of it both list
    // exactly `feeds` as stuck, and `also` holds; returns the edge's status then.
    let until_shown_stuck = async |feeds: serde_json::Value, also: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let here = sync_status().await;
            let there = reported().await;
            if here["stuck_feeds"] == feeds
                && there.as_ref().map(|r| &r["stuck_feeds"]) == Some(&feeds)
                && also()
            {
                return here;
            }
            assert!(
                Instant::now() < deadline,
                "stuck feeds never {feeds}: {here}, reported {there:?}\n{}",
                server.log()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };

    // Two pulls in a row, each silent for two 5 s heartbeats: about 20 s.
    let here = until_shown_stuck(serde_json::json!(["plans"]), &|| true).await;
    // The other feeds hear from the server: the hospital's own events arrived.
    assert!(here["inbound_events_stored"].as_u64() > Some(0), "{here}");
    assert_eq!(stuck_gauge().await.as_deref(), Some("1"));
    // The command service read the report and made the consumer again, once.
    let deadline = Instant::now() + Duration::from_secs(30);
    while plans_made_at().await == first_made_at {
        assert!(
            Instant::now() < deadline,
            "the command service did not make the stuck consumer again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let remade_at = plans_made_at().await;
    // The edge still hears nothing (it may not pull) and keeps reporting it, every 200 ms.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        sync_status().await["stuck_feeds"],
        serde_json::json!(["plans"])
    );
    assert_eq!(
        plans_made_at().await,
        remade_at,
        "made again within its cooldown"
    );
    let central_metrics = scrape(format!("http://{}/metrics", command_service.addr)).await;
    for line in [
        "hms_edge_consumers_remade_total{outcome=\"made\"} 1",
        "hms_edge_consumers_remade_total{outcome=\"failed\"} 0",
    ] {
        assert!(
            central_metrics.iter().any(|l| l == line),
            "{line} in\n{central_metrics:#?}"
        );
    }

    // The operator's fix: the edge may pull its plans again.
    std::fs::write(
        dir.path().join(nats_auth::EDGES_FILE),
        nats_auth::edges_conf(&names, &edges).unwrap(),
    )
    .unwrap();
    server.reload();
    let plan_stored = || {
        rusqlite::Connection::open(&db)
            .unwrap()
            .query_row(
                "SELECT COUNT(*) FROM inbound WHERE event_type = 'PlanPublished'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .unwrap()
    };
    until_shown_stuck(serde_json::json!([]), &|| plan_stored() > 0).await;
    assert_eq!(stuck_gauge().await.as_deref(), Some("0"));
    edge.stop().await.unwrap();
    command_service.stop().await;
}
