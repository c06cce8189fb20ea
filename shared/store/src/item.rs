//! The raw layer every backend implements: items, conditions, writes, queries.

use stratus_model::Keys;
use uuid::Uuid;

/// One stored object: its kind and id, its version, its index keys, its JSON document.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub kind: &'static str,
    pub id: Uuid,
    /// 1 when created; each update adds one.
    pub version: u64,
    pub keys: Keys,
    pub doc: String,
}

/// What must hold for a write to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// Nothing: the write applies whatever is there.
    Any,
    /// No item with this kind and id exists.
    Absent,
    /// The item exists at exactly this version.
    Version(u64),
}

impl std::fmt::Display for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Condition::Any => f.write_str("any"),
            Condition::Absent => f.write_str("absent"),
            Condition::Version(v) => write!(f, "version {v}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    Put {
        item: Item,
        condition: Condition,
    },
    Delete {
        kind: &'static str,
        id: Uuid,
        condition: Condition,
    },
    /// Writes nothing; fails the transaction unless the condition holds.
    Check {
        kind: &'static str,
        id: Uuid,
        condition: Condition,
    },
}

impl Write {
    pub fn target(&self) -> (&'static str, Uuid, Condition) {
        match self {
            Write::Put { item, condition } => (item.kind, item.id, *condition),
            Write::Delete {
                kind,
                id,
                condition,
            }
            | Write::Check {
                kind,
                id,
                condition,
            } => (kind, *id, *condition),
        }
    }
}

/// A secondary key to list by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Index {
    All,
    Account(Uuid),
    Zone(Uuid),
    Host(Uuid),
    Network(Uuid),
    State(String),
}

/// One page of a listing, in id order; `next` continues after the last item.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<Uuid>,
}

/// A counter: how many items of `kind` an index value holds (`("all", "")` for all of the kind).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CounterKey {
    pub kind: &'static str,
    pub index: &'static str,
    pub value: String,
}

impl Index {
    /// The counter that counts this index's matches of `kind`.
    pub fn counter(&self, kind: &'static str) -> CounterKey {
        let (index, value) = match self {
            Index::All => ("all", String::new()),
            Index::Account(u) => ("account", u.to_string()),
            Index::Zone(u) => ("zone", u.to_string()),
            Index::Host(u) => ("host", u.to_string()),
            Index::Network(u) => ("network", u.to_string()),
            Index::State(s) => ("state", s.clone()),
        };
        CounterKey { kind, index, value }
    }

    /// Every index an item with `keys` is listed under.
    pub fn all_for(keys: &Keys) -> Vec<Index> {
        let mut v = vec![Index::All];
        v.extend(keys.account.map(Index::Account));
        v.extend(keys.zone.map(Index::Zone));
        v.extend(keys.host.map(Index::Host));
        v.extend(keys.network.map(Index::Network));
        v.extend(keys.state.clone().map(Index::State));
        v
    }
}

/// How the counters move when an item of `kind` goes from `old` keys (None:
/// absent) to `new` keys (None: deleted). Deltas are summed per counter, and
/// counters that do not move are left out.
pub fn counter_deltas(
    kind: &'static str,
    old: Option<&Keys>,
    new: Option<&Keys>,
    into: &mut std::collections::BTreeMap<CounterKey, i64>,
) {
    for k in old.map(Index::all_for).unwrap_or_default() {
        *into.entry(k.counter(kind)).or_default() -= 1;
    }
    for k in new.map(Index::all_for).unwrap_or_default() {
        *into.entry(k.counter(kind)).or_default() += 1;
    }
    into.retain(|_, d| *d != 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_follow_key_changes() {
        let a = Uuid::new_v4();
        let running = Keys {
            account: Some(a),
            state: Some("Running".into()),
            ..Default::default()
        };
        let stopped = Keys {
            account: Some(a),
            state: Some("Stopped".into()),
            ..Default::default()
        };
        let mut d = std::collections::BTreeMap::new();
        counter_deltas("vm", None, Some(&running), &mut d);
        assert_eq!(d.len(), 3);
        let mut d = std::collections::BTreeMap::new();
        counter_deltas("vm", Some(&running), Some(&stopped), &mut d);
        assert_eq!(d.len(), 2, "{d:?}");
        assert_eq!(d[&Index::State("Running".into()).counter("vm")], -1);
        assert_eq!(d[&Index::State("Stopped".into()).counter("vm")], 1);
        let mut d = std::collections::BTreeMap::new();
        counter_deltas("vm", Some(&stopped), None, &mut d);
        assert!(d.values().all(|v| *v == -1) && d.len() == 3);
    }
}
