//! CloudStack's settings in Consul's KV, end to end: `cs updateConfiguration`
//! against the real runner (its Consul stand-in), taking effect in the running
//! API without a restart; bad values (an empty one too) refused with the old
//! value kept; cluster-scoped overprovisioning factors.

use std::time::{Duration, Instant};

use stratus_tests::TestEnv;
use stratus_tests::cloudstack::Platform;

async fn page_of_600(p: &Platform) -> (u16, serde_json::Value) {
    p.get(&[("command", "listZones"), ("page", "1"), ("pagesize", "600")])
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_setting_changed_with_cs_takes_effect_live() {
    let env = TestEnv::new("settings-live");
    let p = Platform::start(&env);
    let (status, body) = page_of_600(&p).await;
    assert_eq!(status, 431, "{body}");
    assert_eq!(
        body["listzonesresponse"]["errortext"],
        "Page size can't exceed max allowed page size value: 500"
    );

    let updated = p
        .cs(&[
            "updateConfiguration",
            "name=default.page.size",
            "value=1000",
        ])
        .unwrap();
    assert_eq!(updated["configuration"]["value"], "1000", "{updated}");
    assert_eq!(updated["configuration"]["isdynamic"], true);
    // Every API instance sees it within its cache's age (a few seconds), no restart.
    let started = Instant::now();
    loop {
        let (status, body) = page_of_600(&p).await;
        if status == 200 {
            assert_eq!(body["listzonesresponse"]["count"], 1, "{body}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the new page size never took effect: {body}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let listed = p
        .cs(&["listConfigurations", "name=default.page.size"])
        .unwrap();
    assert_eq!(listed["configuration"][0]["value"], "1000", "{listed}");
    assert_eq!(listed["configuration"][0]["defaultvalue"], "500");

    // A bad value: CloudStack's 431 and text; the old value stays.
    let (status, body) = p
        .get(&[
            ("command", "updateConfiguration"),
            ("name", "default.page.size"),
            ("value", "lots"),
        ])
        .await;
    assert_eq!(status, 431, "{body}");
    assert_eq!(
        body["updateconfigurationresponse"]["errortext"],
        "There was error in trying to parse value: lots. Please enter a valid long value for parameter default.page.size"
    );
    // An empty value is no value (CloudStack's null), never a silent 200;
    // ping.timeout keeps its bounds.
    for (name, value, text) in [
        (
            "default.page.size",
            "",
            "There was error in trying to parse value: null. Please enter a valid long value for parameter default.page.size",
        ),
        (
            "ping.timeout",
            "0",
            "Please enter a value between 1 and 100 for the configuration parameter: ping.timeout",
        ),
        (
            "ping.timeout",
            "NaN",
            "There was error in trying to parse value: NaN. Please enter a valid float value for parameter ping.timeout",
        ),
    ] {
        let (status, body) = p
            .get(&[
                ("command", "updateConfiguration"),
                ("name", name),
                ("value", value),
            ])
            .await;
        assert_eq!(status, 431, "{name} = {value:?}: {body}");
        assert_eq!(body["updateconfigurationresponse"]["errortext"], text);
    }
    let timeout = p.cs(&["listConfigurations", "name=ping.timeout"]).unwrap();
    assert_eq!(timeout["configuration"][0]["value"], "2.5", "{timeout}");
    let err = p
        .cs(&["updateConfiguration", "name=default.page.size", "value=0"])
        .unwrap_err();
    assert!(err.contains("431"), "{err}");
    let (status, body) = p
        .get(&[
            ("command", "updateConfiguration"),
            ("name", "no.such.setting"),
            ("value", "1"),
        ])
        .await;
    assert_eq!(status, 431);
    assert_eq!(
        body["updateconfigurationresponse"]["errortext"],
        "Config parameter with name no.such.setting doesn't exist"
    );
    let listed = p
        .cs(&["listConfigurations", "name=default.page.size"])
        .unwrap();
    assert_eq!(listed["configuration"][0]["value"], "1000", "{listed}");
    let (status, _) = page_of_600(&p).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn overprovisioning_factors_are_set_per_cluster() {
    let env = TestEnv::new("settings-cluster");
    let p = Platform::start(&env);
    let clusters = p.cs(&["listClusters"]).unwrap();
    let c0 = clusters["cluster"][0]["id"].as_str().unwrap().to_string();
    let c1 = clusters["cluster"][1]["id"].as_str().unwrap().to_string();
    let cpu_total = || {
        let capacity = p.cs(&["listCapacity", "type=1"]).unwrap();
        capacity["capacity"][0]["capacitytotal"].as_u64().unwrap()
    };
    let before = cpu_total();
    let set = p
        .cs(&[
            "updateConfiguration",
            "name=cpu.overprovisioning.factor",
            "value=4.0",
            &format!("clusterid={c0}"),
        ])
        .unwrap();
    assert_eq!(
        (
            &set["configuration"]["value"],
            &set["configuration"]["scope"]
        ),
        (&serde_json::json!("4.0"), &serde_json::json!("cluster"))
    );
    let value_in = |cluster: &str| {
        let listed = p
            .cs(&[
                "listConfigurations",
                "name=cpu.overprovisioning.factor",
                &format!("clusterid={cluster}"),
            ])
            .unwrap();
        listed["configuration"][0]["value"]
            .as_str()
            .unwrap()
            .to_string()
    };
    // Other API instances see the change within their settings' age (3 s).
    let started = Instant::now();
    while value_in(&c0) != "4.0" || cpu_total() != before + 3 * 2 * 8 * 2400 {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the cluster's factor never showed: {} / {}",
            value_in(&c0),
            cpu_total()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(
        value_in(&c1),
        "1.0",
        "another cluster keeps the global value"
    );
    // The zone's CPU capacity counts that cluster's hosts four times (C0: two
    // hosts of 8 x 2400 MHz; C1 unchanged).
    assert_eq!(
        cpu_total(),
        before + 3 * 2 * 8 * 2400,
        "capacity before: {before}"
    );
    let global = p
        .cs(&["listConfigurations", "name=cpu.overprovisioning.factor"])
        .unwrap();
    assert_eq!(global["configuration"][0]["value"], "1.0");
    // A global setting has no cluster scope; a factor must be above 0; one scope at a time.
    let (status, body) = p
        .get(&[
            ("command", "updateConfiguration"),
            ("name", "default.page.size"),
            ("value", "100"),
            ("clusterid", &c0),
        ])
        .await;
    assert_eq!(status, 431);
    assert_eq!(
        body["updateconfigurationresponse"]["errortext"],
        "Invalid scope id provided for the parameter default.page.size"
    );
    let (status, body) = p
        .get(&[
            ("command", "updateConfiguration"),
            ("name", "mem.overprovisioning.factor"),
            ("value", "0"),
            ("clusterid", &c0),
        ])
        .await;
    assert_eq!(status, 431);
    assert_eq!(
        body["updateconfigurationresponse"]["errortext"],
        "mem.overprovisioning.factor should be greater than 0"
    );
    let zone = p.cs(&["listZones"]).unwrap()["zone"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, body) = p
        .get(&[
            ("command", "updateConfiguration"),
            ("name", "cpu.overprovisioning.factor"),
            ("value", "2"),
            ("clusterid", &c0),
            ("zoneid", &zone),
        ])
        .await;
    assert_eq!(status, 431);
    assert_eq!(
        body["updateconfigurationresponse"]["errortext"],
        "cannot handle multiple IDs, provide only one ID corresponding to the scope"
    );
    assert_eq!(value_in(&c0), "4.0");
}
