//! The conformance suite on DynamoDB (moto's server, which `scripts/test`
//! starts and names in `STRATUS_TEST_DYNAMODB`), plainly and with injected
//! faults: moto is strongly consistent and never raises transaction
//! conflicts or throttling, so those are injected and everything must still hold.

use std::sync::Arc;

use stratus_model::Vm;
use stratus_store::dynamodb::{DynamoStore, Faults};
use stratus_store::{Backend, Condition, Store, StoreError, Write, conformance};

fn endpoint() -> String {
    std::env::var("STRATUS_TEST_DYNAMODB")
        .expect("STRATUS_TEST_DYNAMODB is not set: run scripts/test, which starts moto's server, or start one (moto_server -H 127.0.0.1 -p 5000) and set it")
}

fn prefix(name: &str) -> String {
    format!(
        "t{}_{name}_",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

async fn stores(name: &str, faults: Faults, connections: usize) -> Vec<Arc<Store>> {
    let prefix = prefix(name);
    let first = DynamoStore::connect(&endpoint(), &prefix, faults)
        .await
        .unwrap();
    first.create_table().await.unwrap();
    first.create_table().await.unwrap();
    let mut out = vec![Arc::new(Store::new(Backend::DynamoDb(first)))];
    for _ in 1..connections {
        out.push(Arc::new(Store::new(Backend::DynamoDb(
            DynamoStore::connect(&endpoint(), &prefix, faults)
                .await
                .unwrap(),
        ))));
    }
    out
}

#[tokio::test]
async fn dynamodb_conforms() {
    conformance::run_all(&stores("plain", Faults::default(), 8).await).await;
}

#[tokio::test]
async fn dynamodb_conforms_under_injected_faults() {
    let faults = Faults {
        transaction_conflict: 0.2,
        throttling: 0.1,
        stale_index: 0.3,
    };
    conformance::run_all(&stores("faults", faults, 8).await).await;
}

#[tokio::test]
async fn a_missing_table_says_how_to_create_it() {
    let store = DynamoStore::connect(&endpoint(), &prefix("missing"), Faults::default())
        .await
        .unwrap();
    let e = store.get("vm", uuid::Uuid::new_v4()).await.unwrap_err();
    assert!(matches!(e, StoreError::MissingTable { .. }), "{e}");
    assert!(e.to_string().contains("create_table"), "{e}");
}

#[tokio::test]
async fn an_item_that_fails_to_decode_names_its_key_and_field() {
    let raw = DynamoStore::connect(&endpoint(), &prefix("decode"), Faults::default())
        .await
        .unwrap();
    raw.create_table().await.unwrap();
    let id = uuid::Uuid::new_v4();
    let item = stratus_store::Item {
        kind: "vm",
        id,
        version: 1,
        keys: Default::default(),
        doc: format!("{{\"id\":\"{id}\"}}"),
    };
    raw.transact(vec![Write::Put {
        item,
        condition: Condition::Absent,
    }])
    .await
    .unwrap();
    let store = Store::new(Backend::DynamoDb(raw));
    match store.get::<Vm>(stratus_model::Id::from_uuid(id)).await {
        Err(e @ StoreError::Decode { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("vm")
                    && text.contains(&id.to_string())
                    && text.contains("missing field `name`"),
                "{text}"
            );
        }
        other => panic!("expected a decode error, got {other:?}"),
    }
}
