//! The sample events under `events/`: one per message type and trigger kind,
//! current with the generator, and decodable by the code that receives them.

use stratus_contracts::message_types::REGISTRY;
use stratus_messaging::Envelope;
use stratus_messaging::rmq_event::RmqEvent;
use stratus_tests::{events, root};

#[test]
fn samples_are_current() {
    let mut stale = Vec::new();
    for (path, content) in events::generate() {
        if std::fs::read_to_string(&path).ok().as_deref() != Some(content.as_str()) {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "stale or missing samples (run `cargo run -p stratus-tests --bin gen-events`): {stale:?}"
    );
}

#[test]
fn every_message_type_has_a_sample_that_decodes_to_it() {
    for t in REGISTRY {
        let path = root().join(format!("events/rmq/{}.json", t.name));
        let text = std::fs::read(&path)
            .unwrap_or_else(|_| panic!("message type {} has no sample {}", t.name, path.display()));
        let event: RmqEvent = serde_json::from_slice(&text).unwrap();
        assert_eq!(event.message_count(), 1, "{}", path.display());
        let message = event
            .messages_by_queue
            .values()
            .next()
            .unwrap()
            .first()
            .unwrap();
        let env = Envelope::from_rmq(message).unwrap();
        assert_eq!(env.message_type, t.name);
    }
}

#[test]
fn every_trigger_kind_has_a_sample() {
    for dir in ["rmq", "http", "schedule"] {
        let n = std::fs::read_dir(root().join("events").join(dir))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "json")
            })
            .count();
        assert!(n > 0, "events/{dir} has no sample");
    }
    let http: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root().join("events/http/client-api-get.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(http["version"], "2.0");
    let upstream: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root().join("events/upstream/example-apigw-v2-request-no-authorizer.json"))
            .unwrap(),
    )
    .unwrap();
    for key in upstream.as_object().unwrap().keys() {
        if key != "pathParameters" && key != "stageVariables" {
            assert!(
                http.get(key).is_some(),
                "our API Gateway v2 event lacks {key}, which the upstream sample has"
            );
        }
    }
}
