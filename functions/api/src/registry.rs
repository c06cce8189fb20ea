//! The one command registry. Dispatch, role checks, parameter checks,
//! `listApis` and the 432 for unknown commands all read it, so they cannot
//! drift apart. A command is registered only once its flow exists.

use futures::future::BoxFuture;
use serde_json::Value;
use stratus_cloudstack::{ApiError, Params};

use crate::Ctx;
use crate::scope::Names;

/// CloudStack's three access roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    RootAdmin,
    DomainAdmin,
    User,
}

pub const ALL: &[Role] = &[Role::RootAdmin, Role::DomainAdmin, Role::User];
pub const ADMINS: &[Role] = &[Role::RootAdmin, Role::DomainAdmin];
pub const ROOT: &[Role] = &[Role::RootAdmin];

/// A parameter's type, named as `listApis` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    String,
    Uuid,
    Boolean,
    Integer,
    Long,
    Map,
    List,
    Date,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::String => "string",
            Kind::Uuid => "uuid",
            Kind::Boolean => "boolean",
            Kind::Integer => "integer",
            Kind::Long => "long",
            Kind::Map => "map",
            Kind::List => "list",
            Kind::Date => "date",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Param {
    pub name: &'static str,
    pub kind: Kind,
    pub required: bool,
    /// The longest value accepted (CloudStack's default is 255).
    pub length: u32,
    pub description: &'static str,
    /// For a uuid: what it names. The one scope check refuses an object
    /// outside the caller's scope before the handler runs ([`crate::scope`]).
    pub names: Option<Names>,
}

impl Param {
    /// This uuid parameter names `names`.
    pub fn naming(self, names: Names) -> Param {
        Param {
            names: Some(names),
            ..self
        }
    }
}

pub const fn param(name: &'static str, kind: Kind, description: &'static str) -> Param {
    Param {
        name,
        kind,
        required: false,
        length: 255,
        description,
        names: None,
    }
}

pub const fn required(name: &'static str, kind: Kind, description: &'static str) -> Param {
    Param {
        name,
        kind,
        required: true,
        length: 255,
        description,
        names: None,
    }
}

/// A field of a command's response, for `listApis`.
#[derive(Debug, Clone)]
pub struct Field {
    pub name: String,
    pub kind: String,
    pub description: String,
}

pub fn field(name: &str, kind: &str, description: &str) -> Field {
    Field {
        name: name.into(),
        kind: kind.into(),
        description: description.into(),
    }
}

/// The fields of an object's view, read off the view of a sample, so that
/// `listApis` lists exactly what responses carry.
pub fn fields_of(object: &str, view: &serde_json::Value) -> Vec<Field> {
    use serde_json::Value;
    let Some(m) = view.as_object() else {
        return vec![];
    };
    m.iter()
        .map(|(name, v)| {
            let kind = match v {
                Value::Bool(_) => "boolean",
                Value::Number(n) if n.is_f64() => "double",
                Value::Number(_) => "long",
                Value::Array(_) => "list",
                Value::Object(_) => "map",
                Value::String(s)
                    if name == "created"
                        || s.len() == 24 && s.as_bytes().get(10) == Some(&b'T') =>
                {
                    "date"
                }
                _ => "string",
            };
            field(name, kind, &format!("the {name} of the {object}"))
        })
        .collect()
}

pub type Handler = for<'a> fn(&'a Ctx, &'a Params) -> BoxFuture<'a, Result<Value, ApiError>>;

pub struct Command {
    pub name: &'static str,
    pub description: &'static str,
    pub since: &'static str,
    pub is_async: bool,
    pub roles: &'static [Role],
    pub params: Vec<Param>,
    pub response: Vec<Field>,
    pub related: &'static str,
    pub handler: Handler,
}

impl Command {
    /// A synchronous command whose response fields (for `listApis`) are read
    /// off `sample`, a view of its `object`; set `is_async` (and the rest)
    /// with struct update.
    pub fn sync(
        name: &'static str,
        description: &'static str,
        roles: &'static [Role],
        params: Vec<Param>,
        object: &'static str,
        sample: serde_json::Value,
        handler: Handler,
    ) -> Command {
        Command {
            name,
            description,
            since: "",
            is_async: false,
            roles,
            params,
            response: fields_of(object, &sample),
            related: "",
            handler,
        }
    }
}

/// The parameters every list command takes, its `id` naming `names`.
pub fn list_of(names: Names, extra: &[Param]) -> Vec<Param> {
    let mut v = list_params(extra);
    v[0] = v[0].naming(names);
    v
}

/// The parameters every list command takes (`id` naming nothing: for
/// root-only lists; see [`list_of`]).
pub fn list_params(extra: &[Param]) -> Vec<Param> {
    let mut v = vec![
        param("id", Kind::Uuid, "list by ID"),
        param("keyword", Kind::String, "List by keyword"),
        param("page", Kind::Integer, "the page to return, from 1"),
        param("pagesize", Kind::Integer, "the number of items per page"),
    ];
    v.extend_from_slice(extra);
    v
}

pub struct Registry {
    commands: Vec<Command>,
}

impl Registry {
    /// The registry of `commands`. Panics (at start, and in every test) when
    /// a command that anyone but a root admin may call has a uuid parameter
    /// that does not say what it names: the scope check could not cover it.
    pub fn new(mut commands: Vec<Command>) -> Self {
        for c in &commands {
            if c.roles.iter().all(|r| *r == Role::RootAdmin) {
                continue;
            }
            for p in &c.params {
                assert!(
                    p.kind != Kind::Uuid || p.names.is_some(),
                    "{}: the uuid parameter {} must say what it names (Param::naming), \
                     so that the scope check covers it",
                    c.name,
                    p.name
                );
            }
        }
        commands.sort_by_key(|c| c.name.to_lowercase());
        Registry { commands }
    }

    /// The command called `name`, matched case-insensitively as CloudStack does.
    pub fn find(&self, name: &str) -> Option<&Command> {
        self.commands
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(name))
    }

    pub fn all(&self) -> &[Command] {
        &self.commands
    }
}
