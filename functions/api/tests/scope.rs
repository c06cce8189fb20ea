//! Scope, generated from the registry: for every uuid parameter a command
//! declares, every caller (the root admin; the domain admins of A, of A's
//! child and of B; the users of A and of B) and an object of that kind owned
//! by each of them, the caller gets the object when it is within its scope
//! (a user: its own account; a domain admin: its domain and those below; the
//! root admin: all) and never anything of it otherwise: a read answers `{}`,
//! anything else 531, and no answer carries the owner's names, e-mails or ids.
//! A command registered later is covered as it is registered.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::Utc;
use common::*;
use serde_json::{Value, json};
use stratus_contracts::settings::Defaults;
use stratus_fn_api::Api;
use stratus_fn_api::registry::{Command, Kind, Param, Role};
use stratus_fn_api::scope::Outside;
use stratus_model::samples::{Fixture, Sample};
use stratus_model::*;
use stratus_store::Store;
use uuid::Uuid;

/// Kinds nobody owns: everyone may name them (the role check guards them).
const PUBLIC: &[&str] = &[
    "zone",
    "pod",
    "cluster",
    "host",
    "storagepool",
    "serviceoffering",
    "diskoffering",
    "networkoffering",
    "alert",
    "capacity",
];

/// A caller, and the owner of one object of every kind.
struct Party {
    who: Who,
    role: Role,
    domain: Domain,
    /// Its objects, by the kind a parameter names.
    objects: BTreeMap<&'static str, Uuid>,
    /// What must never reach a caller outside its scope.
    secrets: Vec<String>,
}

struct World {
    api: Api,
    parties: Vec<Party>,
    /// Ids of public objects (a zone, an offering) for required parameters.
    public: std::collections::BTreeMap<&'static str, String>,
}

/// A name nobody else's contains.
fn unique(base: &str) -> String {
    format!("{base}{}", &Uuid::new_v4().simple().to_string()[..8])
}

async fn party(store: &Store, domain: &Domain, base: &str, t: AccountType, n: u8) -> Party {
    let name = unique(base);
    let who = person(store, domain, &name, t).await;
    let f = Fixture {
        domain: domain.id,
        account: who.account.id,
        user: who.user.id,
        zone: Fixture::default().zone,
        ..Fixture::default()
    };
    // A second user of the account: acting on it (new keys) leaves the caller's own keys alone.
    let user = User {
        id: User::id_for(domain.id, &format!("{name}-2")),
        account_id: who.account.id,
        username: format!("{name}-2"),
        email: format!("{name}-2@example.com"),
        firstname: name.clone(),
        ..User::sample(&f)
    };
    store.create(&user).await.unwrap();
    let network = Network {
        name: format!("net-{name}"),
        display_text: format!("net-{name}"),
        ..Network::sample(&f)
    };
    let vm = Vm {
        name: format!("vm-{name}"),
        display_name: format!("vm-{name}"),
        ..Vm::sample(&f)
    };
    let volume = Volume {
        name: format!("vol-{name}"),
        vm_id: Some(vm.id),
        ..Volume::sample(&f)
    };
    let address = format!("10.9.{n}.5");
    let ip = IpAddress {
        id: IpAddress::id_for(network.id, &address),
        address,
        network_id: network.id,
        purpose: IpPurpose::Public,
        ..IpAddress::sample(&f)
    };
    let key_pair = SshKeyPair {
        name: format!("key-{name}"),
        ..SshKeyPair::sample(&f)
    };
    let group = SecurityGroup {
        name: format!("sg-{name}"),
        ..SecurityGroup::sample(&f)
    };
    let tag = Tag {
        value: format!("tag-{name}"),
        resource_id: vm.id.uuid(),
        ..Tag::sample(&f)
    };
    let event = Event {
        description: format!("event of {name}"),
        resource_id: Some(vm.id.uuid()),
        ..Event::sample(&f)
    };
    // An ended job whose result carries the owner's users and e-mail, as
    // the probe that found the hole saw.
    let job = AsyncJob {
        status: JobStatus::Succeeded,
        result_type: Some("object".into()),
        result: Some(json!({ "account": {
            "name": name,
            "user": [{ "username": name, "email": who.user.email }],
        }})),
        completed: Some(Utc::now()),
        ..AsyncJob::sample(&f)
    };
    let template = Template {
        name: format!("tpl-{name}"),
        display_text: format!("template of {name}"),
        is_public: false,
        is_featured: false,
        ..Template::sample(&f)
    };
    store.create(&network).await.unwrap();
    store.create(&vm).await.unwrap();
    store.create(&volume).await.unwrap();
    store.create(&ip).await.unwrap();
    store.create(&key_pair).await.unwrap();
    store.create(&group).await.unwrap();
    store.create(&tag).await.unwrap();
    store.create(&event).await.unwrap();
    store.create(&job).await.unwrap();
    store.create(&template).await.unwrap();
    let objects = BTreeMap::from([
        (Account::KIND, who.account.id.uuid()),
        (User::KIND, user.id.uuid()),
        (Domain::KIND, domain.id.uuid()),
        (Network::KIND, network.id.uuid()),
        (Vm::KIND, vm.id.uuid()),
        (Volume::KIND, volume.id.uuid()),
        (IpAddress::KIND, ip.id.uuid()),
        (SshKeyPair::KIND, key_pair.id.uuid()),
        (SecurityGroup::KIND, group.id.uuid()),
        (Tag::KIND, tag.id.uuid()),
        (Event::KIND, event.id.uuid()),
        (AsyncJob::KIND, job.id.uuid()),
        (Template::KIND, template.id.uuid()),
        ("resource", vm.id.uuid()),
    ]);
    let mut secrets: Vec<String> = vec![
        name.clone(),
        who.user.email.clone(),
        who.user.id.to_string(),
        user.email.clone(),
    ];
    secrets.extend(
        objects
            .iter()
            .filter(|(k, _)| **k != Domain::KIND)
            .map(|(_, id)| id.to_string()),
    );
    let role = match t {
        AccountType::Admin => Role::RootAdmin,
        AccountType::DomainAdmin => Role::DomainAdmin,
        AccountType::User => Role::User,
    };
    Party {
        who,
        role,
        domain: domain.clone(),
        objects,
        secrets,
    }
}

async fn world() -> World {
    let store = store();
    let root = domain(&store, "ROOT", None).await;
    let a = domain(&store, "ROOT/a", Some(&root)).await;
    let child = domain(&store, "ROOT/a/child", Some(&a)).await;
    let b = domain(&store, "ROOT/b", Some(&root)).await;
    let parties = vec![
        party(&store, &root, "root", AccountType::Admin, 1).await,
        party(&store, &a, "dadmina", AccountType::DomainAdmin, 2).await,
        party(&store, &a, "usera", AccountType::User, 3).await,
        party(&store, &b, "dadminb", AccountType::DomainAdmin, 4).await,
        party(&store, &b, "userb", AccountType::User, 5).await,
        party(&store, &child, "dadminc", AccountType::DomainAdmin, 6).await,
    ];
    let zone = common::zone(&store).await;
    let f = stratus_model::samples::Fixture::default();
    let offering = store
        .create(&ServiceOffering::sample(&f))
        .await
        .unwrap()
        .value;
    let template = store
        .create(&Template {
            is_public: true,
            account_id: parties[0].who.account.id,
            zone_id: None,
            ..Template::sample(&f)
        })
        .await
        .unwrap()
        .value;
    World {
        api: Api::new(store, None, Arc::new(Defaults::default()), secrets()),
        parties,
        public: [
            ("templateid", template.id.to_string()),
            ("zoneid", zone.id.to_string()),
            ("serviceofferingid", offering.id.to_string()),
        ]
        .into_iter()
        .collect(),
    }
}

/// `d` is `top` or below it.
fn below(d: &Domain, top: &Domain) -> bool {
    d.path == top.path || d.path.starts_with(&format!("{}/", top.path))
}

/// Whether `caller` may see what `owner` owns (for `domain`: `owner`'s domain).
fn in_scope(caller: &Party, owner: &Party, kind: &str) -> bool {
    match (caller.role, kind == Domain::KIND) {
        (Role::RootAdmin, _) => true,
        (Role::User, true) => caller.domain.id == owner.domain.id,
        (Role::User, false) => caller.who.account.id == owner.who.account.id,
        (Role::DomainAdmin, _) => below(&owner.domain, &caller.domain),
    }
}

/// A value for a required parameter other than the one under test.
fn fill(w: &World, command: &str, name: &str, kind: Kind, n: usize) -> String {
    if let Some(id) = w.public.get(name) {
        return id.clone();
    }
    match (name, kind) {
        ("templatefilter", _) => "all".into(),
        (_, Kind::Boolean) => "false".into(),
        (_, Kind::String) => format!("x{n}"),
        // An object that does not exist: the command answers 431 for it
        // after the scope check, which is what is under test.
        (_, Kind::Uuid) => uuid::Uuid::new_v4().to_string(),
        _ => panic!(
            "{command}: no value for its required parameter {name}: give one here so that the scope test can call it"
        ),
    }
}

/// Whether `caller`'s answer for `owner`'s object is right: within scope,
/// the object (or, for an action, no refusal); outside, `{}` or 531 and
/// nothing of the owner's.
#[allow(clippy::too_many_arguments)]
fn verdict(
    w: &World,
    cmd: &Command,
    param: &Param,
    caller: &Party,
    owner: &Party,
    id: &str,
    status: u16,
    body: &Value,
) -> Result<(), String> {
    let names = param.names.unwrap();
    let text = body.to_string();
    let expect = |ok: bool, why: &str| if ok { Ok(()) } else { Err(why.to_string()) };
    if !cmd.roles.contains(&caller.role) {
        return expect(status == 401, "not the role's command, yet not 401");
    }
    if in_scope(caller, owner, names.kind) {
        expect(status != 531, "refused within scope")?;
        let reads =
            param.name == "jobid" || param.name == "id" && matches!(names.outside, Outside::Unseen);
        if reads {
            expect(status == 200, "a read within scope failed")?;
            // The object itself (a tag's view has no id: the one tag it is).
            return expect(
                text.contains(id) || inner(body)["count"] == 1,
                "not returned within scope",
            );
        }
        // Else the handler's own refusal at most (e.g. disabling one's own account).
        return expect(
            status == 200 || status == 431 && !text.contains("entity does not exist"),
            "an action within scope failed",
        );
    }
    match names.outside {
        Outside::Unseen => expect(
            status == 200 && inner(body) == &json!({}),
            "a read outside scope is not {}",
        )?,
        Outside::Denied(_) => expect(status == 531, "outside scope, yet not 531")?,
    }
    // Nothing of the owner's, nor (for a domain) of anyone's in it.
    let owners = w.parties.iter().filter(|p| {
        p.who.account.id == owner.who.account.id
            || names.kind == Domain::KIND && p.domain.id == owner.domain.id
    });
    for secret in owners.flat_map(|p| &p.secrets) {
        expect(
            secret == id || !text.contains(secret.as_str()),
            &format!("{secret} leaked"),
        )?;
    }
    Ok(())
}

#[tokio::test]
async fn no_command_by_id_reaches_outside_the_callers_scope() {
    let w = world().await;
    let mut calls = 0;
    let mut covered = BTreeSet::new();
    let mut failures = vec![];
    for cmd in w.api.registry.all() {
        for param in cmd.params.iter().filter(|p| p.kind == Kind::Uuid) {
            let Some(names) = param.names else {
                // Only root admins may call it: their scope is everything.
                assert!(
                    cmd.roles.iter().all(|r| *r == Role::RootAdmin),
                    "{}.{} names nothing",
                    cmd.name,
                    param.name
                );
                continue;
            };
            if PUBLIC.contains(&names.kind) {
                continue;
            }
            covered.insert(format!("{}.{}", cmd.name, param.name));
            for caller in &w.parties {
                for owner in &w.parties {
                    calls += 1;
                    let id = owner
                        .objects
                        .get(names.kind)
                        .unwrap_or_else(|| {
                            panic!(
                                "{}.{} names a {}: the scope test needs one of each party's to probe it",
                                cmd.name, param.name, names.kind
                            )
                        })
                        .to_string();
                    let mut params = vec![
                        ("command".to_string(), cmd.name.to_string()),
                        (param.name.to_string(), id.clone()),
                    ];
                    for other in cmd
                        .params
                        .iter()
                        .filter(|p| p.required && p.name != param.name)
                    {
                        params.push((
                            other.name.into(),
                            fill(&w, cmd.name, other.name, other.kind, calls),
                        ));
                    }
                    let pairs: Vec<(&str, &str)> = params
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect();
                    let (status, body) = call(&w.api, &caller.who, &pairs).await;
                    if let Err(why) = verdict(&w, cmd, param, caller, owner, &id, status, &body) {
                        failures.push(format!(
                            "{why}: {} {}={id} ({}) by {} ({:?}) of {} ({:?}): {status} {body}",
                            cmd.name,
                            param.name,
                            names.kind,
                            caller.who.account.name,
                            caller.role,
                            owner.who.account.name,
                            owner.role,
                        ));
                    }
                }
            }
        }
    }
    eprintln!("{calls} calls over {} parameters", covered.len());
    assert!(
        failures.is_empty(),
        "{} of {calls} calls wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The reads and actions by id the issue names are among those covered.
    for c in [
        "queryAsyncJobResult.jobid",
        "listVirtualMachines.id",
        "listAccounts.id",
        "listUsers.id",
        "listAsyncJobs.id",
        "enableAccount.id",
        "disableAccount.id",
        "registerUserKeys.id",
        "getUserKeys.id",
        "listDomains.id",
    ] {
        assert!(covered.contains(c), "{c} not covered: {covered:?}");
    }
    assert_eq!(calls, covered.len() * w.parties.len() * w.parties.len());
}

/// The probe that found the hole: a domain admin asks for jobs of another
/// domain's account and of the root admin; it gets CloudStack's 531, as a
/// user does, and nothing of the job.
#[tokio::test]
async fn query_async_job_result_of_another_domains_job_is_531() {
    let w = world().await;
    let (root, dadmina, usera, dadminb) =
        (&w.parties[0], &w.parties[1], &w.parties[2], &w.parties[3]);
    for owner in [root, dadminb] {
        let job = owner.objects[AsyncJob::KIND].to_string();
        let (status, body) = call(
            &w.api,
            &dadmina.who,
            &[("command", "queryAsyncJobResult"), ("jobid", &job)],
        )
        .await;
        assert_eq!(status, 531, "{body}");
        assert_eq!(
            inner(&body)["errortext"],
            "Caller does not have permission to operate with provided resource."
        );
        assert!(!body.to_string().contains(&owner.who.user.email), "{body}");
        let (status, body) = call(
            &w.api,
            &usera.who,
            &[("command", "queryAsyncJobResult"), ("jobid", &job)],
        )
        .await;
        assert_eq!(status, 531, "{body}");
        assert_eq!(
            inner(&body)["errortext"],
            format!(
                "Account {} is not authorized to see job id={job}",
                usera.who.account.name
            )
        );
    }
    // Within its domain: the user's job, whole.
    let job = usera.objects[AsyncJob::KIND].to_string();
    let (status, body) = call(
        &w.api,
        &dadmina.who,
        &[("command", "queryAsyncJobResult"), ("jobid", &job)],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(inner(&body)["jobid"], job.as_str());
    assert_eq!(
        inner(&body)["jobresult"]["account"]["user"][0]["email"],
        usera.who.user.email.as_str()
    );
    // A domain outside the caller's, named by id: CloudStack's checkAccess text.
    let b = dadminb.domain.id.to_string();
    let (status, body) = call(
        &w.api,
        &dadmina.who,
        &[("command", "listAccounts"), ("domainid", &b)],
    )
    .await;
    assert_eq!(status, 531, "{body}");
    assert_eq!(
        inner(&body)["errortext"],
        format!(
            "Account {} does not have permission to operate within domain id={b}",
            dadmina.who.account.name
        )
    );
}
