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
#[derive(Debug, Clone, PartialEq, Eq)]
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
