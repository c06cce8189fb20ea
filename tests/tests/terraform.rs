//! Checks of terraform/ (issue 12) that need no cloud account:
//! - coverage: manifest.tf's locals, evaluated here with hcl-rs, hold exactly the
//!   manifest's functions, queue triggers, schedules, HTTP routes and startups (read
//!   independently with serde), the resources consume those maps, and nothing else declares
//!   a function, trigger, table, route or invocation;
//! - IAM: modules/function's `local.policy_statements`, evaluated per manifest function with
//!   placeholder ARNs, grants only what that function's `uses` allow, and all of it;
//! - python-hcl2 parses every .tf, checkov finds no failed check, every skip has a reason;
//! - `terraform fmt -check` and `terraform validate` when a terraform (or tofu) binary is
//!   on PATH (SKIPPED otherwise, or validate alone when the providers can't be had);
//! - `terraform test` of terraform/tests/*.tftest.hcl (hashicorp/aws mocked: the real
//!   evaluation of the configuration against infra/manifest.json), initialised like
//!   validate; every root output must be in its no-secret assertion.
//!
//! Every check takes the terraform directory as a parameter and returns the problems it
//! found, so the negative tests run the same checks on a modified temporary copy.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use hcl::eval::{Context, Evaluate, FuncArgs, FuncDef, ParamType};
use hcl::expr::{
    BinaryOp, BinaryOperator, Conditional, Expression, ForExpr, FuncCall, ObjectKey, Operation,
    TraversalOperator, UnaryOp, UnaryOperator,
};
use hcl::{Block, Body, Value};
use serde_json::Value as Json;
use stratus_contracts::manifest::{Manifest, Trigger, Use, parse_rate};

// ---------------------------------------------------------------------------------------
// Files

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

fn terraform_dir() -> PathBuf {
    repo().join("terraform")
}

fn manifest() -> Manifest {
    Manifest::load(&repo().join("infra/manifest.json")).expect("infra/manifest.json loads")
}

/// The trigger types this file knows: a new one fails `coverage` until Terraform (and this
/// test) handles it. `Trigger` is also matched without a wildcard below, so a new variant
/// does not compile here.
const KNOWN_TRIGGER_TYPES: [&str; 4] = ["queue", "http", "schedule", "startup"];

struct TfFile {
    /// Relative to the terraform directory, with `/`.
    rel: String,
    body: Body,
}

impl TfFile {
    fn module_dir(&self) -> &str {
        self.rel.rsplit_once('/').map(|(d, _)| d).unwrap_or("")
    }
}

fn tf_paths(dir: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if name.starts_with('.') {
                continue;
            }
            if p.is_dir() {
                walk(&p, out);
            } else if name.ends_with(".tf") {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, &mut out);
    out
}

/// Parses every terraform/**/*.tf with hcl-rs.
fn load_tf(dir: &Path) -> Result<Vec<TfFile>, Vec<String>> {
    let mut files = Vec::new();
    let mut problems = Vec::new();
    for p in tf_paths(dir) {
        let rel = p
            .strip_prefix(dir)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        let text = std::fs::read_to_string(&p).unwrap();
        match hcl::parse(&text) {
            Ok(body) => files.push(TfFile { rel, body }),
            Err(e) => problems.push(format!("{rel}: hcl-rs does not parse it: {e}")),
        }
    }
    if files.is_empty() && problems.is_empty() {
        problems.push(format!("no .tf file under {}", dir.display()));
    }
    if problems.is_empty() {
        Ok(files)
    } else {
        Err(problems)
    }
}

/// A top-level block: resource/data/module/variable/output/locals...
struct Decl<'a> {
    file: &'a TfFile,
    block: &'a Block,
}

impl Decl<'_> {
    fn kind(&self) -> &str {
        self.block.identifier()
    }
    fn label(&self, i: usize) -> &str {
        self.block.labels().get(i).map(|l| l.as_str()).unwrap_or("")
    }
    fn attr(&self, name: &str) -> Option<&Expression> {
        attr(self.block.body(), name)
    }
    fn attr_text(&self, name: &str) -> String {
        self.attr(name).map(expr_text).unwrap_or_default()
    }
    fn at(&self) -> String {
        format!(
            "{}: {} {:?}",
            self.file.rel,
            self.kind(),
            self.block
                .labels()
                .iter()
                .map(|l| l.as_str())
                .collect::<Vec<_>>()
        )
    }
}

fn decls(files: &[TfFile]) -> Vec<Decl<'_>> {
    files
        .iter()
        .flat_map(|f| f.body.blocks().map(move |b| Decl { file: f, block: b }))
        .collect()
}

fn attr<'a>(body: &'a Body, name: &str) -> Option<&'a Expression> {
    body.attributes()
        .find(|a| a.key() == name)
        .map(|a| a.expr())
}

/// An expression as HCL text, whitespace squeezed (to compare `for_each = local.x`).
fn expr_text(e: &Expression) -> String {
    let s = hcl::format::to_string(e).unwrap_or_else(|_| format!("{e:?}"));
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

// ---------------------------------------------------------------------------------------
// The evaluator: hcl-rs's, with Terraform's functions (those the spec allows in the
// locals) and variables (var, local, path, resource and data placeholders).

thread_local! {
    /// Where file() resolves relative paths (Terraform's working directory: the root module).
    static FILE_BASE: RefCell<PathBuf> = RefCell::new(PathBuf::new());
}

/// A failed expression inside try()/can(): the rewritten arguments yield this instead of
/// an error, and try/can look for it.
const FAILED: &str = "\u{1}hcl-eval-failed";

fn failed() -> Value {
    Value::String(FAILED.into())
}

fn has_failed(v: &Value) -> bool {
    match v {
        Value::String(s) => s == FAILED,
        Value::Array(a) => a.iter().any(has_failed),
        Value::Object(o) => o.values().any(has_failed),
        _ => false,
    }
}

type F = fn(&[Value]) -> Result<Value, String>;

fn num(f: f64) -> Value {
    if f.fract() == 0.0 && f.abs() < 9.0e15 {
        Value::from(f as i64)
    } else {
        Value::Number(hcl::Number::from_f64(f).expect("finite number"))
    }
}

fn as_f64(v: &Value) -> Result<f64, String> {
    match v {
        Value::Number(n) => n.as_f64().ok_or_else(|| format!("{n} is not a number")),
        Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not a number")),
        other => Err(format!("{other} is not a number")),
    }
}

fn as_str(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(format!("{other} is not a string")),
    }
}

fn as_list(v: &Value) -> Result<Vec<Value>, String> {
    match v {
        Value::Array(a) => Ok(a.clone()),
        other => Err(format!("{other} is not a list")),
    }
}

fn arity(a: &[Value], n: usize, name: &str) -> Result<(), String> {
    if a.len() == n {
        Ok(())
    } else {
        Err(format!("{name}() takes {n} arguments, got {}", a.len()))
    }
}

/// JSON to an HCL value with object keys sorted, as Terraform iterates them.
fn from_json(j: &Json) -> Value {
    match j {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else {
                num(n.as_f64().unwrap())
            }
        }
        Json::String(s) => Value::String(s.clone()),
        Json::Array(a) => Value::Array(a.iter().map(from_json).collect()),
        Json::Object(o) => {
            let sorted: BTreeMap<_, _> = o.iter().collect();
            Value::Object(
                sorted
                    .into_iter()
                    .map(|(k, v)| (k.clone(), from_json(v)))
                    .collect(),
            )
        }
    }
}

fn to_json(v: &Value) -> Json {
    serde_json::to_value(v).unwrap()
}

fn sort_object(o: hcl::Map<String, Value>) -> Value {
    let sorted: BTreeMap<_, _> = o.into_iter().collect();
    Value::Object(sorted.into_iter().collect())
}

fn f_file(a: &[Value]) -> Result<Value, String> {
    arity(a, 1, "file")?;
    let p = PathBuf::from(as_str(&a[0])?);
    let p = if p.is_absolute() {
        p
    } else {
        FILE_BASE.with(|b| b.borrow().join(&p))
    };
    std::fs::read_to_string(&p)
        .map(Value::String)
        .map_err(|e| format!("file({}): {e}", p.display()))
}
fn f_jsondecode(a: &[Value]) -> Result<Value, String> {
    arity(a, 1, "jsondecode")?;
    let j: Json = serde_json::from_str(&as_str(&a[0])?).map_err(|e| format!("jsondecode: {e}"))?;
    Ok(from_json(&j))
}
fn f_jsonencode(a: &[Value]) -> Result<Value, String> {
    arity(a, 1, "jsonencode")?;
    Ok(Value::String(
        serde_json::to_string(&to_json(&a[0])).unwrap(),
    ))
}
fn f_merge(a: &[Value]) -> Result<Value, String> {
    let mut out = hcl::Map::new();
    for v in a {
        match v {
            Value::Null => {}
            Value::Object(o) => out.extend(o.clone()),
            other => return Err(format!("merge: {other} is not an object")),
        }
    }
    Ok(sort_object(out))
}
fn flatten_into(v: &Value, out: &mut Vec<Value>) {
    match v {
        Value::Array(a) => a.iter().for_each(|x| flatten_into(x, out)),
        other => out.push(other.clone()),
    }
}
fn f_flatten(a: &[Value]) -> Result<Value, String> {
    arity(a, 1, "flatten")?;
    let mut out = Vec::new();
    for x in as_list(&a[0])? {
        flatten_into(&x, &mut out);
    }
    Ok(Value::Array(out))
}
fn f_concat(a: &[Value]) -> Result<Value, String> {
    let mut out = Vec::new();
    for v in a {
        out.extend(as_list(v)?);
    }
    Ok(Value::Array(out))
}
fn f_contains(a: &[Value]) -> Result<Value, String> {
    arity(a, 2, "contains")?;
    Ok(Value::Bool(as_list(&a[0])?.contains(&a[1])))
}
fn f_length(a: &[Value]) -> Result<Value, String> {
    arity(a, 1, "length")?;
    Ok(Value::from(match &a[0] {
        Value::String(s) => s.chars().count(),
        Value::Array(x) => x.len(),
        Value::Object(o) => o.len(),
        other => return Err(format!("length: {other} has no length")),
    } as i64))
}
fn f_keys(a: &[Value]) -> Result<Value, String> {
    arity(a, 1, "keys")?;
    let o = a[0].as_object().ok_or("keys: not an object")?;
    let k: BTreeSet<_> = o.keys().cloned().collect();
    Ok(Value::Array(k.into_iter().map(Value::String).collect()))
}
fn f_values(a: &[Value]) -> Result<Value, String> {
    arity(a, 1, "values")?;
    let o = a[0].as_object().ok_or("values: not an object")?;
    let sorted: BTreeMap<_, _> = o.iter().collect();
    Ok(Value::Array(sorted.into_values().cloned().collect()))
}
fn f_lookup(a: &[Value]) -> Result<Value, String> {
    if a.len() != 2 && a.len() != 3 {
        return Err("lookup() takes 2 or 3 arguments".into());
    }
    let o = a[0].as_object().ok_or("lookup: not an object")?;
    match o.get(&as_str(&a[1])?) {
        Some(v) => Ok(v.clone()),
        None if a.len() == 3 => Ok(a[2].clone()),
        None => Err(format!("lookup: no key {}", a[1])),
    }
}
fn f_try(a: &[Value]) -> Result<Value, String> {
    a.iter()
        .find(|v| !has_failed(v))
        .cloned()
        .ok_or_else(|| "try: no argument succeeded".into())
}
fn f_can(a: &[Value]) -> Result<Value, String> {
    arity(a, 1, "can")?;
    Ok(Value::Bool(!has_failed(&a[0])))
}
fn f_regex(a: &[Value]) -> Result<Value, String> {
    arity(a, 2, "regex")?;
    let re = regex::Regex::new(&as_str(&a[0])?).map_err(|e| format!("regex: {e}"))?;
    let s = as_str(&a[1])?;
    let c = re
        .captures(&s)
        .ok_or_else(|| format!("regex: no match in {s:?}"))?;
    let names: Vec<_> = re.capture_names().skip(1).collect();
    if names.is_empty() {
        return Ok(Value::String(c[0].to_string()));
    }
    if names.iter().all(|n| n.is_some()) {
        let mut o = hcl::Map::new();
        for n in names.into_iter().flatten() {
            o.insert(
                n.to_string(),
                c.name(n)
                    .map(|m| Value::String(m.as_str().into()))
                    .unwrap_or(Value::Null),
            );
        }
        return Ok(Value::Object(o));
    }
    Ok(Value::Array(
        (1..c.len())
            .map(|i| {
                c.get(i)
                    .map(|m| Value::String(m.as_str().into()))
                    .unwrap_or(Value::Null)
            })
            .collect(),
    ))
}
fn f_tonumber(a: &[Value]) -> Result<Value, String> {
    arity(a, 1, "tonumber")?;
    if a[0].is_null() {
        return Ok(Value::Null);
    }
    as_f64(&a[0]).map(num)
}
fn f_tostring(a: &[Value]) -> Result<Value, String> {
    arity(a, 1, "tostring")?;
    if a[0].is_null() {
        return Ok(Value::Null);
    }
    as_str(&a[0]).map(Value::String)
}
fn f_min(a: &[Value]) -> Result<Value, String> {
    let v: Result<Vec<f64>, _> = a.iter().map(as_f64).collect();
    v?.into_iter()
        .reduce(f64::min)
        .map(num)
        .ok_or_else(|| "min: no argument".into())
}
fn f_max(a: &[Value]) -> Result<Value, String> {
    let v: Result<Vec<f64>, _> = a.iter().map(as_f64).collect();
    v?.into_iter()
        .reduce(f64::max)
        .map(num)
        .ok_or_else(|| "max: no argument".into())
}
fn f_floor(a: &[Value]) -> Result<Value, String> {
    arity(a, 1, "floor")?;
    Ok(num(as_f64(&a[0])?.floor()))
}
fn f_ceil(a: &[Value]) -> Result<Value, String> {
    arity(a, 1, "ceil")?;
    Ok(num(as_f64(&a[0])?.ceil()))
}
fn f_format(a: &[Value]) -> Result<Value, String> {
    let spec = as_str(a.first().ok_or("format: no format")?)?;
    let mut args = a[1..].iter();
    let mut out = String::new();
    let mut chars = spec.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some('s') | Some('v') => {
                out.push_str(&as_str(args.next().ok_or("format: too few arguments")?)?)
            }
            Some('d') => out.push_str(&format!(
                "{}",
                as_f64(args.next().ok_or("format: too few arguments")?)? as i64
            )),
            Some('q') => out.push_str(
                &Json::String(as_str(args.next().ok_or("format: too few arguments")?)?).to_string(),
            ),
            other => {
                return Err(format!(
                    "format: verb %{other:?} not supported by this evaluator"
                ));
            }
        }
    }
    Ok(Value::String(out))
}
fn f_replace(a: &[Value]) -> Result<Value, String> {
    arity(a, 3, "replace")?;
    let (s, sub, rep) = (as_str(&a[0])?, as_str(&a[1])?, as_str(&a[2])?);
    if sub.len() > 1 && sub.starts_with('/') && sub.ends_with('/') {
        let re = regex::Regex::new(&sub[1..sub.len() - 1]).map_err(|e| format!("replace: {e}"))?;
        return Ok(Value::String(re.replace_all(&s, rep.as_str()).into_owned()));
    }
    Ok(Value::String(s.replace(&sub, &rep)))
}
fn f_lower(a: &[Value]) -> Result<Value, String> {
    arity(a, 1, "lower")?;
    Ok(Value::String(as_str(&a[0])?.to_lowercase()))
}
fn f_upper(a: &[Value]) -> Result<Value, String> {
    arity(a, 1, "upper")?;
    Ok(Value::String(as_str(&a[0])?.to_uppercase()))
}
fn f_join(a: &[Value]) -> Result<Value, String> {
    let sep = as_str(a.first().ok_or("join: no separator")?)?;
    let mut parts = Vec::new();
    for l in &a[1..] {
        for v in as_list(l)? {
            parts.push(as_str(&v)?);
        }
    }
    Ok(Value::String(parts.join(&sep)))
}
fn f_split(a: &[Value]) -> Result<Value, String> {
    arity(a, 2, "split")?;
    let (sep, s) = (as_str(&a[0])?, as_str(&a[1])?);
    Ok(Value::Array(
        s.split(sep.as_str())
            .map(|p| Value::String(p.into()))
            .collect(),
    ))
}
fn f_coalesce(a: &[Value]) -> Result<Value, String> {
    a.iter()
        .find(|v| !v.is_null() && v.as_str() != Some(""))
        .cloned()
        .ok_or_else(|| "coalesce: no non-null, non-empty argument".into())
}
fn f_distinct(a: &[Value]) -> Result<Value, String> {
    arity(a, 1, "distinct")?;
    let mut out: Vec<Value> = Vec::new();
    for v in as_list(&a[0])? {
        if !out.contains(&v) {
            out.push(v);
        }
    }
    Ok(Value::Array(out))
}
fn f_toset(a: &[Value]) -> Result<Value, String> {
    let Value::Array(d) = f_distinct(a)? else {
        unreachable!()
    };
    // Terraform orders a set of strings lexically.
    let mut d = d;
    if d.iter().all(|v| v.is_string()) {
        d.sort_by(|x, y| x.as_str().cmp(&y.as_str()));
    }
    Ok(Value::Array(d))
}
fn f_tolist(a: &[Value]) -> Result<Value, String> {
    arity(a, 1, "tolist")?;
    as_list(&a[0]).map(Value::Array)
}
/// `x.a[0]` inside try()/can(): FAILED instead of an error.
fn f_get(a: &[Value]) -> Result<Value, String> {
    arity(a, 2, "__get")?;
    Ok(match (&a[0], &a[1]) {
        (Value::Object(o), k) => as_str(k)
            .ok()
            .and_then(|k| o.get(&k).cloned())
            .unwrap_or_else(failed),
        (Value::Array(l), Value::Number(n)) => n
            .as_u64()
            .and_then(|i| l.get(i as usize).cloned())
            .unwrap_or_else(failed),
        _ => failed(),
    })
}
/// Operators inside try()/can().
fn f_op(a: &[Value]) -> Result<Value, String> {
    let op = as_str(&a[0])?;
    let x = &a[1];
    if a.len() == 2 {
        return match op.as_str() {
            "!" => x
                .as_bool()
                .map(|b| Value::Bool(!b))
                .ok_or_else(|| "! on a non-bool".into()),
            "-" => Ok(num(-as_f64(x)?)),
            _ => Err(format!("unary {op}")),
        };
    }
    let y = &a[2];
    Ok(match op.as_str() {
        "==" => Value::Bool(x == y || (x.is_number() && y.is_number() && as_f64(x)? == as_f64(y)?)),
        "!=" => {
            Value::Bool(!(x == y || (x.is_number() && y.is_number() && as_f64(x)? == as_f64(y)?)))
        }
        "&&" | "||" => {
            let (p, q) = (
                x.as_bool().ok_or("not a bool")?,
                y.as_bool().ok_or("not a bool")?,
            );
            Value::Bool(if op == "&&" { p && q } else { p || q })
        }
        _ => {
            let (p, q) = (as_f64(x)?, as_f64(y)?);
            match op.as_str() {
                "<" => Value::Bool(p < q),
                "<=" => Value::Bool(p <= q),
                ">" => Value::Bool(p > q),
                ">=" => Value::Bool(p >= q),
                "+" => num(p + q),
                "-" => num(p - q),
                "*" => num(p * q),
                "/" => num(p / q),
                "%" => num(p % q),
                _ => return Err(format!("operator {op}")),
            }
        }
    })
}
/// `c ? t : f` inside try()/can() (both sides evaluated; the chosen one returned).
fn f_cond(a: &[Value]) -> Result<Value, String> {
    arity(a, 3, "__cond")?;
    match &a[0] {
        Value::Bool(true) => Ok(a[1].clone()),
        Value::Bool(false) => Ok(a[2].clone()),
        _ => Err("condition is not a bool".into()),
    }
}

const FUNCS: &[(&str, F)] = &[
    ("file", f_file),
    ("jsondecode", f_jsondecode),
    ("jsonencode", f_jsonencode),
    ("merge", f_merge),
    ("flatten", f_flatten),
    ("concat", f_concat),
    ("contains", f_contains),
    ("length", f_length),
    ("keys", f_keys),
    ("values", f_values),
    ("lookup", f_lookup),
    ("try", f_try),
    ("can", f_can),
    ("regex", f_regex),
    ("tonumber", f_tonumber),
    ("tostring", f_tostring),
    ("min", f_min),
    ("max", f_max),
    ("floor", f_floor),
    ("ceil", f_ceil),
    ("format", f_format),
    ("replace", f_replace),
    ("lower", f_lower),
    ("upper", f_upper),
    ("join", f_join),
    ("split", f_split),
    ("coalesce", f_coalesce),
    ("distinct", f_distinct),
    ("toset", f_toset),
    ("tolist", f_tolist),
    ("__get", f_get),
    ("__op", f_op),
    ("__cond", f_cond),
];

fn lookup_fn(name: &str) -> Option<F> {
    FUNCS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

// hcl-rs takes plain fn pointers: one wrapper per (function, strict|safe).
macro_rules! wrappers {
    ($($i:literal),*) => {
        const STRICT: &[fn(FuncArgs) -> Result<Value, String>] = &[$(|a| (FUNCS[$i].1)(&a)),*];
        const SAFE: &[fn(FuncArgs) -> Result<Value, String>] = &[$(|a| Ok(safe_call(FUNCS[$i].0, FUNCS[$i].1, &a))),*];
    };
}
wrappers!(
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25,
    26, 27, 28, 29, 30, 31, 32
);

/// Inside try()/can(): a failed argument or a failing call yields FAILED (try and can
/// themselves see their FAILED arguments).
fn safe_call(name: &str, f: F, a: &[Value]) -> Value {
    if name != "try" && name != "can" && a.iter().any(has_failed) {
        return failed();
    }
    f(a).unwrap_or_else(|_| failed())
}

fn context(vars: &[(String, Value)]) -> Context<'static> {
    assert_eq!(FUNCS.len(), STRICT.len());
    let mut ctx = Context::new();
    for (i, (name, _)) in FUNCS.iter().enumerate() {
        let def = |f| FuncDef::builder().variadic_param(ParamType::Any).build(f);
        ctx.declare_func(*name, def(STRICT[i]));
        ctx.declare_func(format!("__safe_{name}"), def(SAFE[i]));
    }
    for (k, v) in vars {
        ctx.declare_var(k.as_str(), v.clone());
    }
    ctx
}

fn call(name: &str, args: Vec<Expression>) -> Expression {
    let mut c = FuncCall::new(name);
    c.args = args;
    Expression::FuncCall(Box::new(c))
}

/// Rewrites try(...) and can(...) so that their arguments fail softly: traversals become
/// __get, operators __op, conditionals __cond, calls their __safe_ variants.
fn rewrite(e: &Expression, soft: bool) -> Expression {
    let r = |x: &Expression| rewrite(x, soft);
    match e {
        Expression::Array(a) => Expression::Array(a.iter().map(r).collect()),
        Expression::Object(o) => Expression::Object(
            o.iter()
                .map(|(k, v)| {
                    let k = match k {
                        ObjectKey::Expression(x) => ObjectKey::Expression(r(x)),
                        other => other.clone(),
                    };
                    (k, r(v))
                })
                .collect(),
        ),
        Expression::Parenthesis(x) => Expression::Parenthesis(Box::new(r(x))),
        Expression::FuncCall(c) => {
            let name = c.name.name.as_str().to_string();
            let inner = soft || name == "try" || name == "can";
            let mut c2 = (**c).clone();
            c2.args = c.args.iter().map(|x| rewrite(x, inner)).collect();
            if soft && lookup_fn(&name).is_some() {
                c2.name = hcl::expr::FuncName::new(format!("__safe_{name}"));
            }
            Expression::FuncCall(Box::new(c2))
        }
        Expression::Traversal(t) if soft => {
            let mut acc = r(&t.expr);
            for op in &t.operators {
                acc = match op {
                    TraversalOperator::GetAttr(id) => call(
                        "__safe___get",
                        vec![acc, Expression::String(id.to_string())],
                    ),
                    TraversalOperator::Index(i) => call("__safe___get", vec![acc, r(i)]),
                    TraversalOperator::LegacyIndex(n) => {
                        call("__safe___get", vec![acc, Expression::from(*n)])
                    }
                    // Splats stay hcl-rs's (an error in them escapes the try).
                    _ => {
                        let mut t2 = (**t).clone();
                        t2.expr = r(&t.expr);
                        return Expression::Traversal(Box::new(t2));
                    }
                };
            }
            acc
        }
        Expression::Traversal(t) => {
            let mut t2 = (**t).clone();
            t2.expr = r(&t.expr);
            t2.operators = t
                .operators
                .iter()
                .map(|op| match op {
                    TraversalOperator::Index(i) => TraversalOperator::Index(r(i)),
                    other => other.clone(),
                })
                .collect();
            Expression::Traversal(Box::new(t2))
        }
        Expression::Conditional(c) if soft => call(
            "__safe___cond",
            vec![r(&c.cond_expr), r(&c.true_expr), r(&c.false_expr)],
        ),
        Expression::Conditional(c) => Expression::Conditional(Box::new(Conditional {
            cond_expr: r(&c.cond_expr),
            true_expr: r(&c.true_expr),
            false_expr: r(&c.false_expr),
        })),
        Expression::Operation(op) => match &**op {
            Operation::Unary(u) if soft => {
                let o = match u.operator {
                    UnaryOperator::Not => "!",
                    UnaryOperator::Neg => "-",
                };
                call("__safe___op", vec![Expression::from(o), r(&u.expr)])
            }
            Operation::Binary(b) if soft => {
                let o = match b.operator {
                    BinaryOperator::Eq => "==",
                    BinaryOperator::NotEq => "!=",
                    BinaryOperator::LessEq => "<=",
                    BinaryOperator::GreaterEq => ">=",
                    BinaryOperator::Less => "<",
                    BinaryOperator::Greater => ">",
                    BinaryOperator::Plus => "+",
                    BinaryOperator::Minus => "-",
                    BinaryOperator::Mul => "*",
                    BinaryOperator::Div => "/",
                    BinaryOperator::Mod => "%",
                    BinaryOperator::And => "&&",
                    BinaryOperator::Or => "||",
                };
                call(
                    "__safe___op",
                    vec![Expression::from(o), r(&b.lhs_expr), r(&b.rhs_expr)],
                )
            }
            Operation::Unary(u) => Expression::Operation(Box::new(Operation::Unary(UnaryOp {
                operator: u.operator,
                expr: r(&u.expr),
            }))),
            Operation::Binary(b) => Expression::Operation(Box::new(Operation::Binary(BinaryOp {
                lhs_expr: r(&b.lhs_expr),
                operator: b.operator,
                rhs_expr: r(&b.rhs_expr),
            }))),
        },
        Expression::ForExpr(f) => Expression::ForExpr(Box::new(ForExpr {
            key_var: f.key_var.clone(),
            value_var: f.value_var.clone(),
            collection_expr: r(&f.collection_expr),
            key_expr: f.key_expr.as_ref().map(r),
            value_expr: r(&f.value_expr),
            grouping: f.grouping,
            cond_expr: f.cond_expr.as_ref().map(r),
        })),
        other => other.clone(),
    }
}

/// The `local.NAME`s an expression reads.
fn local_refs(e: &Expression) -> BTreeSet<String> {
    let re = regex::Regex::new(r"\blocal\.([A-Za-z_][A-Za-z0-9_-]*)").unwrap();
    re.captures_iter(&expr_text(e))
        .map(|c| c[1].to_string())
        .collect()
}

/// Evaluates the wanted locals of one module (and the locals they read), in dependency
/// order. `vars`: the other root variables (var, path, placeholders).
fn eval_locals(
    files: &[TfFile],
    module_dir: &str,
    base: &Path,
    vars: Vec<(String, Value)>,
    wanted: &[&str],
) -> Result<BTreeMap<String, Value>, String> {
    let mut exprs: BTreeMap<String, (&str, &Expression)> = BTreeMap::new();
    for f in files.iter().filter(|f| f.module_dir() == module_dir) {
        for b in f.body.blocks().filter(|b| b.identifier() == "locals") {
            for a in b.body().attributes() {
                if exprs
                    .insert(a.key().to_string(), (&f.rel, a.expr()))
                    .is_some()
                {
                    return Err(format!("{}: local.{} is defined twice", f.rel, a.key()));
                }
            }
        }
    }
    FILE_BASE.with(|b| *b.borrow_mut() = base.to_path_buf());
    let mut done: BTreeMap<String, Value> = BTreeMap::new();
    fn visit(
        name: &str,
        exprs: &BTreeMap<String, (&str, &Expression)>,
        vars: &[(String, Value)],
        done: &mut BTreeMap<String, Value>,
        stack: &mut Vec<String>,
    ) -> Result<(), String> {
        if done.contains_key(name) {
            return Ok(());
        }
        if stack.iter().any(|s| s == name) {
            return Err(format!("local.{name}: cycle through {stack:?}"));
        }
        let (file, e) = exprs
            .get(name)
            .ok_or_else(|| format!("local.{name} is not defined"))?;
        stack.push(name.to_string());
        for dep in local_refs(e) {
            visit(&dep, exprs, vars, done, stack)?;
        }
        stack.pop();
        let mut all = vars.to_vec();
        all.push((
            "local".into(),
            Value::Object(done.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
        ));
        let ctx = context(&all);
        let v = rewrite(e, false)
            .evaluate(&ctx)
            .map_err(|err| format!("{file}: local.{name} does not evaluate: {err}"))?;
        if has_failed(&v) {
            return Err(format!(
                "{file}: local.{name}: a failed expression outside try()"
            ));
        }
        done.insert(name.to_string(), v);
        Ok(())
    }
    for w in wanted {
        visit(w, &exprs, &vars, &mut done, &mut Vec::new())?;
    }
    Ok(done)
}

/// `var` from the variables' defaults (null without one).
fn variable_defaults(files: &[TfFile], module_dir: &str) -> BTreeMap<String, (String, Value)> {
    let mut out = BTreeMap::new();
    for d in decls(files)
        .into_iter()
        .filter(|d| d.file.module_dir() == module_dir && d.kind() == "variable")
    {
        let ty = d.attr_text("type");
        let default = d
            .attr("default")
            .map(|e| {
                e.evaluate(&Context::new())
                    .unwrap_or_else(|err| panic!("{}: default: {err}", d.at()))
            })
            .unwrap_or(Value::Null);
        out.insert(d.label(0).to_string(), (ty, default));
    }
    out
}

fn path_var(module: &Path, root: &Path) -> Value {
    let mut o = hcl::Map::new();
    o.insert("module".into(), Value::String(module.display().to_string()));
    o.insert("root".into(), Value::String(root.display().to_string()));
    o.insert("cwd".into(), Value::String(root.display().to_string()));
    Value::Object(o)
}

fn root_locals(
    dir: &Path,
    files: &[TfFile],
    wanted: &[&str],
) -> Result<BTreeMap<String, Value>, String> {
    let var: hcl::Map<String, Value> = variable_defaults(files, "")
        .into_iter()
        .map(|(k, (_, v))| (k, v))
        .collect();
    let vars = vec![
        ("var".to_string(), Value::Object(var)),
        ("path".to_string(), path_var(dir, dir)),
    ];
    eval_locals(files, "", dir, vars, wanted)
}

// ---------------------------------------------------------------------------------------
// a. Coverage

fn subminute_window(files: &[TfFile]) -> u64 {
    variable_defaults(files, "")
        .get("subminute_window_seconds")
        .and_then(|(_, v)| as_f64(v).ok())
        .map(|f| f as u64)
        .unwrap_or(55)
}

fn keys_of(v: Option<&Value>) -> BTreeSet<String> {
    v.and_then(|v| v.as_object())
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

fn jnum(j: &Json) -> Option<f64> {
    j.as_f64()
}

/// Checks manifest.tf's maps and the resources that consume them; returns the problems.
fn check_coverage(dir: &Path, manifest: &Manifest, raw_manifest: &Json) -> Vec<String> {
    let mut problems = Vec::new();
    // Every trigger type in the manifest is one this test (and Terraform) knows.
    for f in raw_manifest["functions"].as_array().into_iter().flatten() {
        for t in f["triggers"].as_array().into_iter().flatten() {
            let ty = t["type"].as_str().unwrap_or("");
            if !KNOWN_TRIGGER_TYPES.contains(&ty) {
                problems.push(format!(
                    "function {}: trigger type {ty:?} is unknown to terraform.rs: make Terraform handle it, then add it here",
                    f["name"]
                ));
            }
        }
    }
    let files = match load_tf(dir) {
        Ok(f) => f,
        Err(p) => return p,
    };
    let wanted = [
        "functions",
        "queue_triggers",
        "schedules",
        "http_routes",
        "startups",
        "table",
    ];
    let locals = match root_locals(dir, &files, &wanted) {
        Ok(l) => l,
        Err(e) => {
            problems.push(e);
            return problems;
        }
    };

    // What the manifest says.
    let mut functions = BTreeSet::new();
    let mut queues: BTreeMap<String, (String, String, u32, u32)> = BTreeMap::new();
    let mut schedules: BTreeMap<String, (String, String, String, Option<(u64, u64)>)> =
        BTreeMap::new();
    let mut routes: BTreeMap<String, (String, String, String)> = BTreeMap::new();
    let mut startups: BTreeMap<String, serde_json::Map<String, Json>> = BTreeMap::new();
    let window = subminute_window(&files);
    for f in &manifest.functions {
        functions.insert(f.name.clone());
        for (i, t) in f.triggers.iter().enumerate() {
            match t {
                Trigger::Queue {
                    queue,
                    batch_size,
                    batching_window_ms,
                    concurrency: _,
                } => {
                    queues.insert(
                        format!("{}/{queue}", f.name),
                        (
                            f.name.clone(),
                            queue.clone(),
                            *batch_size,
                            *batching_window_ms,
                        ),
                    );
                }
                Trigger::Schedule { expression } => {
                    let inner = expression.trim_start_matches("rate(").trim_end_matches(')');
                    let sub = inner.ends_with(" second") || inner.ends_with(" seconds");
                    let (aws, repeat) = if sub {
                        let n = parse_rate(expression).unwrap().as_secs();
                        let w = window.min(f.timeout_seconds as u64 - 5);
                        ("rate(1 minute)".to_string(), Some((n * 1000, w * 1000)))
                    } else {
                        (expression.clone(), None)
                    };
                    schedules.insert(
                        format!("{}/{i}", f.name),
                        (f.name.clone(), expression.clone(), aws, repeat),
                    );
                }
                Trigger::Http { route, methods } => {
                    let methods = if methods.is_empty() {
                        vec!["ANY".to_string()]
                    } else {
                        methods.clone()
                    };
                    for m in methods {
                        routes.insert(
                            format!("{m} {route}"),
                            (f.name.clone(), m.clone(), route.clone()),
                        );
                    }
                }
                Trigger::Startup { event } => {
                    startups.insert(f.name.clone(), event.clone());
                }
            }
        }
    }

    let mut cmp_keys = |what: &str, got: BTreeSet<String>, want: BTreeSet<String>| {
        if got != want {
            problems.push(format!(
                "terraform/manifest.tf: local.{what} keys differ from the manifest: missing {:?}, extra {:?}",
                want.difference(&got).collect::<Vec<_>>(),
                got.difference(&want).collect::<Vec<_>>()
            ));
        }
    };
    cmp_keys(
        "functions",
        keys_of(locals.get("functions")),
        functions.clone(),
    );
    cmp_keys(
        "queue_triggers",
        keys_of(locals.get("queue_triggers")),
        queues.keys().cloned().collect(),
    );
    cmp_keys(
        "schedules",
        keys_of(locals.get("schedules")),
        schedules.keys().cloned().collect(),
    );
    cmp_keys(
        "http_routes",
        keys_of(locals.get("http_routes")),
        routes.keys().cloned().collect(),
    );
    cmp_keys(
        "startups",
        keys_of(locals.get("startups")),
        startups.keys().cloned().collect(),
    );

    let get = |local: &str, key: &str| {
        locals
            .get(local)
            .and_then(|v| v.as_object())
            .and_then(|o| o.get(key))
            .map(to_json)
    };
    for (k, (f, q, batch, window_ms)) in &queues {
        if let Some(v) = get("queue_triggers", k) {
            if v["function"] != *f
                || v["queue"] != *q
                || jnum(&v["batch_size"]) != Some(*batch as f64)
                || jnum(&v["batching_window_ms"]) != Some(*window_ms as f64)
            {
                problems.push(format!("local.queue_triggers[{k:?}] = {v} does not match the manifest (function {f}, queue {q}, batch {batch}, window {window_ms} ms)"));
            }
        }
    }
    for (k, (f, expr, aws, repeat)) in &schedules {
        if let Some(v) = get("schedules", k) {
            let repeat_ok = match repeat {
                None => v["repeat"].is_null(),
                Some((every, for_ms)) => {
                    jnum(&v["repeat"]["every_ms"]) == Some(*every as f64)
                        && jnum(&v["repeat"]["for_ms"]) == Some(*for_ms as f64)
                }
            };
            if v["function"] != *f || v["aws_expression"] != *aws || !repeat_ok {
                problems.push(format!(
                    "local.schedules[{k:?}] = {v}: want function {f}, aws_expression {aws:?} (from {expr:?}), repeat {repeat:?} (every_ms, for_ms)"
                ));
            }
            println!(
                "schedule {k}: {expr} -> {} repeat {}",
                v["aws_expression"], v["repeat"]
            );
        }
    }
    for (k, (f, m, r)) in &routes {
        if let Some(v) = get("http_routes", k) {
            if v["function"] != *f || v["method"] != *m || v["route"] != *r {
                problems.push(format!(
                    "local.http_routes[{k:?}] = {v}: want function {f}, method {m}, route {r}"
                ));
            }
        }
    }
    for (k, event) in &startups {
        if let Some(v) = get("startups", k) {
            if v["function"] != *k || v["event"] != Json::Object(event.clone()) {
                problems.push(format!(
                    "local.startups[{k:?}] = {v}: want function {k}, event {}",
                    Json::Object(event.clone())
                ));
            }
        }
    }
    let table = locals.get("table").map(to_json).unwrap_or_default();
    let table_file: Json = serde_json::from_str(
        &std::fs::read_to_string(repo().join("infra/dynamodb-table.json")).unwrap(),
    )
    .unwrap();
    if table != table_file {
        problems.push("local.table is not infra/dynamodb-table.json".into());
    }

    // The resources consume the maps, and nothing else declares one of these.
    let all = decls(&files);
    let fn_modules: Vec<_> = all
        .iter()
        .filter(|d| {
            d.kind() == "module"
                && d.attr_text("source")
                    .trim_matches('"')
                    .trim_end_matches('/')
                    == "./modules/function"
        })
        .collect();
    if fn_modules.len() != 1 {
        problems.push(format!(
            "want exactly one module using ./modules/function, found {}: {:?}",
            fn_modules.len(),
            fn_modules.iter().map(|d| d.at()).collect::<Vec<_>>()
        ));
    }
    for d in &fn_modules {
        if d.file.module_dir() != ""
            || d.label(0) != "function"
            || d.attr_text("for_each") != "local.functions"
            || d.attr("count").is_some()
        {
            problems.push(format!("{}: want module \"function\" in the root with for_each = local.functions (has for_each = {:?})", d.at(), d.attr_text("for_each")));
        }
    }
    // (resource type, where it may be, its for_each)
    let singles: [(&str, &str, Option<&str>); 6] = [
        ("aws_lambda_function", "modules/function", None),
        (
            "aws_lambda_event_source_mapping",
            "",
            Some("local.queue_triggers"),
        ),
        ("aws_cloudwatch_event_rule", "", Some("local.schedules")),
        ("aws_apigatewayv2_route", "", Some("local.http_routes")),
        ("aws_lambda_invocation", "", Some("local.startups")),
        ("aws_dynamodb_table", "", None),
    ];
    for (ty, module_dir, for_each) in singles {
        let found: Vec<_> = all
            .iter()
            .filter(|d| d.kind() == "resource" && d.label(0) == ty)
            .collect();
        println!(
            "{ty}: {} declaration(s) {:?}",
            found.len(),
            found
                .iter()
                .map(|d| format!(
                    "{}:{} for_each={}",
                    d.file.rel,
                    d.label(1),
                    d.attr_text("for_each")
                ))
                .collect::<Vec<_>>()
        );
        if found.len() != 1 {
            problems.push(format!(
                "want exactly one resource {ty} (in {}), found {}: {:?}",
                if module_dir.is_empty() {
                    "terraform/"
                } else {
                    module_dir
                },
                found.len(),
                found.iter().map(|d| d.at()).collect::<Vec<_>>()
            ));
            continue;
        }
        let d = found[0];
        if d.file.module_dir() != module_dir {
            problems.push(format!("{}: {ty} belongs in {module_dir:?}", d.at()));
        }
        if d.attr("count").is_some() {
            problems.push(format!("{}: {ty} has a count", d.at()));
        }
        match for_each {
            Some(fe) if d.attr_text("for_each") != fe => {
                problems.push(format!(
                    "{}: want for_each = {fe}, has {:?}",
                    d.at(),
                    d.attr_text("for_each")
                ));
            }
            None if d.attr("for_each").is_some() && ty == "aws_lambda_function" => {
                problems.push(format!(
                    "{}: one function per module instance: no for_each",
                    d.at()
                ));
            }
            _ => {}
        }
        if ty == "aws_dynamodb_table" {
            for a in ["name", "hash_key", "billing_mode"] {
                if !d.attr_text(a).contains("local.table") {
                    problems.push(format!(
                        "{}: {a} is not built from local.table ({:?})",
                        d.at(),
                        d.attr_text(a)
                    ));
                }
            }
            for (dynamic, source) in [
                ("attribute", "local.table.attributes"),
                (
                    "global_secondary_index",
                    "local.table.global_secondary_indexes",
                ),
            ] {
                let ok = d.block.body().blocks().any(|b| {
                    b.identifier() == "dynamic"
                        && b.labels().first().map(|l| l.as_str()) == Some(dynamic)
                        && attr(b.body(), "for_each")
                            .map(expr_text)
                            .is_some_and(|t| t.contains(source))
                });
                if !ok {
                    problems.push(format!(
                        "{}: want dynamic \"{dynamic}\" with for_each over {source}",
                        d.at()
                    ));
                }
            }
        }
    }
    println!(
        "coverage: {} functions, {} queue triggers, {} schedules, {} routes, {} startups; {} problem(s)",
        functions.len(),
        queues.len(),
        schedules.len(),
        routes.len(),
        startups.len(),
        problems.len()
    );
    problems
}

// ---------------------------------------------------------------------------------------
// b. IAM least privilege

/// What a placeholder stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Res {
    Table,
    TableIndex,
    Broker,
    BrokerSecret,
    ConsulAddress,
    ConsulToken,
    ConsulKey,
    SecretKeyParam,
    Key,
    AdminKeys,
    LogGroup,
}

/// The module's resource variables, by name: (variable, what its value(s) stand for).
/// A string variable ending in _arn / holding "parameter" or "secret" that is not here
/// fails the test (add it, with what it stands for).
const RESOURCE_VARS: &[(&str, &[Res])] = &[
    ("table_arn", &[Res::Table]),
    ("broker_arn", &[Res::Broker]),
    ("broker_secret_arn", &[Res::BrokerSecret]),
    (
        "consul_parameter_arns",
        &[Res::ConsulAddress, Res::ConsulToken],
    ),
    ("consul_parameters_kms_key_arn", &[Res::ConsulKey]),
    ("secret_key_parameter_arn", &[Res::SecretKeyParam]),
    ("kms_key_arn", &[Res::Key]),
    ("admin_keys_secret_arn", &[Res::AdminKeys]),
];

/// Actions granted on "*" (Lambda's VPC ENIs, X-Ray), and nothing else on "*".
const STAR_ACTIONS: &[&str] = &[
    "ec2:CreateNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
    "ec2:DescribeSubnets",
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
];

/// Also on "*" for queue-triggered functions: the Amazon MQ event source mapping's poller
/// describes the broker's network with the function's role (AWS's documented execution
/// role permissions for Amazon MQ triggers).
const QUEUE_STAR_ACTIONS: &[&str] = &["ec2:DescribeSecurityGroups", "ec2:DescribeVpcs"];

/// A grant the function's uses allow: (use, resource, actions). "queue-triggered" and
/// "always" are pseudo-uses. The broker and admin-keys secrets are encrypted with the
/// stack key, so reading (writing) them needs kms:Decrypt (kms:GenerateDataKey) on it:
/// allowed with those uses, not required.
const ALLOWED: &[(&str, Res, &[&str])] = &[
    (
        "table",
        Res::Table,
        &[
            "dynamodb:GetItem",
            "dynamodb:BatchGetItem",
            "dynamodb:Query",
            "dynamodb:PutItem",
            "dynamodb:UpdateItem",
            "dynamodb:DeleteItem",
            "dynamodb:ConditionCheckItem",
            "dynamodb:BatchWriteItem",
            "dynamodb:TransactWriteItems",
            "dynamodb:TransactGetItems",
            "dynamodb:DescribeTable",
            "dynamodb:Scan",
        ],
    ),
    (
        "table",
        Res::TableIndex,
        &["dynamodb:Query", "dynamodb:Scan"],
    ),
    (
        "broker",
        Res::BrokerSecret,
        &[
            "secretsmanager:GetSecretValue",
            "secretsmanager:DescribeSecret",
        ],
    ),
    ("broker", Res::Key, &["kms:Decrypt"]),
    (
        "consul",
        Res::ConsulAddress,
        &["ssm:GetParameter", "ssm:GetParameters"],
    ),
    (
        "consul",
        Res::ConsulToken,
        &["ssm:GetParameter", "ssm:GetParameters"],
    ),
    ("consul", Res::ConsulKey, &["kms:Decrypt"]),
    (
        "secret-key",
        Res::SecretKeyParam,
        &["ssm:GetParameter", "ssm:GetParameters"],
    ),
    ("secret-key", Res::Key, &["kms:Decrypt"]),
    (
        "secret-key-create",
        Res::Key,
        &["kms:GenerateDataKeyWithoutPlaintext"],
    ),
    (
        "secret-key-create",
        Res::SecretKeyParam,
        &["ssm:PutParameter"],
    ),
    (
        "admin-keys",
        Res::AdminKeys,
        &[
            "secretsmanager:PutSecretValue",
            "secretsmanager:DescribeSecret",
        ],
    ),
    (
        "admin-keys",
        Res::Key,
        &["kms:GenerateDataKey", "kms:Decrypt"],
    ),
    ("queue-triggered", Res::Broker, &["mq:DescribeBroker"]),
    (
        "queue-triggered",
        Res::BrokerSecret,
        &["secretsmanager:GetSecretValue"],
    ),
    ("queue-triggered", Res::Key, &["kms:Decrypt"]),
    (
        "always",
        Res::LogGroup,
        &["logs:CreateLogStream", "logs:PutLogEvents"],
    ),
];

/// What each use needs (the calls the code makes): must be granted.
const REQUIRED: &[(&str, Res, &[&str])] = &[
    (
        "table",
        Res::Table,
        &[
            "dynamodb:GetItem",
            "dynamodb:Query",
            "dynamodb:PutItem",
            "dynamodb:UpdateItem",
            "dynamodb:DeleteItem",
            "dynamodb:ConditionCheckItem",
            "dynamodb:BatchWriteItem",
            "dynamodb:TransactWriteItems",
        ],
    ),
    ("table", Res::TableIndex, &["dynamodb:Query"]),
    (
        "broker",
        Res::BrokerSecret,
        &["secretsmanager:GetSecretValue"],
    ),
    ("consul", Res::ConsulAddress, &["ssm:GetParameter"]),
    ("consul", Res::ConsulToken, &["ssm:GetParameter"]),
    ("secret-key", Res::SecretKeyParam, &["ssm:GetParameter"]),
    ("secret-key", Res::Key, &["kms:Decrypt"]),
    (
        "secret-key-create",
        Res::Key,
        &["kms:GenerateDataKeyWithoutPlaintext"],
    ),
    (
        "secret-key-create",
        Res::SecretKeyParam,
        &["ssm:PutParameter"],
    ),
    (
        "admin-keys",
        Res::AdminKeys,
        &["secretsmanager:PutSecretValue"],
    ),
    ("queue-triggered", Res::Broker, &["mq:DescribeBroker"]),
    (
        "queue-triggered",
        Res::BrokerSecret,
        &["secretsmanager:GetSecretValue"],
    ),
    (
        "always",
        Res::LogGroup,
        &["logs:CreateLogStream", "logs:PutLogEvents"],
    ),
];

fn service_of(r: Res) -> &'static str {
    match r {
        Res::Table | Res::TableIndex => "dynamodb",
        Res::Broker => "mq",
        Res::BrokerSecret | Res::AdminKeys => "secretsmanager",
        Res::ConsulAddress | Res::ConsulToken | Res::SecretKeyParam => "ssm",
        Res::ConsulKey | Res::Key => "kms",
        Res::LogGroup => "logs",
    }
}

fn use_name(u: Use) -> &'static str {
    match u {
        Use::Table => "table",
        Use::Broker => "broker",
        Use::Consul => "consul",
        Use::SecretKey => "secret-key",
        Use::SecretKeyCreate => "secret-key-create",
        Use::AdminKeys => "admin-keys",
    }
}

fn placeholder(var: &str, i: usize) -> String {
    format!("arn:aws:ph:us-east-1:111122223333:PH-{var}-{i}")
}

/// Which placeholder a policy resource names (an ARN built around a placeholder counts
/// when it adds no wildcard, plus the table's `/index/*` and the log group's `:*`).
fn classify(r: &str, placeholders: &[(String, Res)]) -> Option<Res> {
    for (p, res) in placeholders {
        if r == p {
            return Some(*res);
        }
        match res {
            Res::Table if r == format!("{p}/index/*") => return Some(Res::TableIndex),
            Res::LogGroup if r == format!("{p}:*") || r == format!("{p}:log-stream:*") => {
                return Some(Res::LogGroup);
            }
            _ => {}
        }
        if let Some(prefix) = r.strip_suffix(p.as_str()) {
            if r.starts_with("arn:") && !prefix.contains('*') {
                return Some(*res);
            }
        }
    }
    None
}

fn strings(v: &Json) -> Vec<String> {
    match v {
        Json::String(s) => vec![s.clone()],
        Json::Array(a) => a.iter().flat_map(strings).collect(),
        _ => vec![],
    }
}

/// Evaluates modules/function's local.policy_statements per manifest function; returns the
/// problems (and prints what each function is granted).
fn check_iam(dir: &Path, manifest: &Manifest) -> Vec<String> {
    let module = "modules/function";
    let files = match load_tf(dir) {
        Ok(f) => f,
        Err(p) => return p,
    };
    let mut problems = Vec::new();
    let defaults = variable_defaults(&files, module);
    if defaults.is_empty() {
        return vec![format!("{module}: no variable declared")];
    }
    for (name, (ty, _)) in &defaults {
        let looks_like_resource = name.ends_with("_arn")
            || name.ends_with("_arns")
            || name.contains("parameter")
            || name.contains("secret");
        if looks_like_resource && !RESOURCE_VARS.iter().any(|(v, _)| v == name) {
            problems.push(format!("{module}: variable {name} ({ty}) looks like a resource: add it to RESOURCE_VARS in tests/tests/terraform.rs with what it stands for"));
        }
    }
    for (v, _) in RESOURCE_VARS {
        if !defaults.contains_key(*v) {
            problems.push(format!(
                "{module}: RESOURCE_VARS names variable {v}, which the module does not declare"
            ));
        }
    }
    // Resources and data sources the module declares: placeholder attributes.
    let mut resources: BTreeMap<String, hcl::Map<String, Value>> = BTreeMap::new();
    let mut data: BTreeMap<String, hcl::Map<String, Value>> = BTreeMap::new();
    let mut placeholders: Vec<(String, Res)> = Vec::new();
    for d in decls(&files)
        .into_iter()
        .filter(|d| d.file.module_dir() == module)
    {
        if d.kind() != "resource" && d.kind() != "data" {
            continue;
        }
        let (ty, name) = (d.label(0).to_string(), d.label(1).to_string());
        let mut attrs = hcl::Map::new();
        for a in [
            "arn",
            "id",
            "name",
            "account_id",
            "region",
            "partition",
            "invoke_arn",
            "qualified_arn",
            "json",
            "dns_suffix",
        ] {
            let p = placeholder(&format!("{}.{ty}.{name}.{a}", d.kind()), 0);
            if d.kind() == "resource" && ty == "aws_cloudwatch_log_group" && a == "arn" {
                placeholders.push((p.clone(), Res::LogGroup));
            }
            attrs.insert(a.to_string(), Value::String(p));
        }
        let target = if d.kind() == "data" {
            &mut data
        } else {
            &mut resources
        };
        target
            .entry(ty)
            .or_default()
            .insert(name, Value::Object(attrs));
    }
    for (v, res) in RESOURCE_VARS {
        for (i, r) in res.iter().enumerate() {
            placeholders.push((placeholder(v, i), *r));
        }
    }
    let mut total_statements = 0;
    for f in &manifest.functions {
        let queue_triggered = f
            .triggers
            .iter()
            .any(|t| matches!(t, Trigger::Queue { .. }));
        let mut uses: Vec<&str> = f.uses.iter().map(|u| use_name(*u)).collect();
        let mut var = hcl::Map::new();
        let fn_json = serde_json::to_value(f).unwrap();
        for (name, (ty, default)) in &defaults {
            let v = if let Some((_, res)) = RESOURCE_VARS.iter().find(|(v, _)| v == name) {
                if ty.starts_with("list") || ty.starts_with("set") || ty.starts_with("tuple") {
                    Value::Array(
                        (0..res.len())
                            .map(|i| Value::String(placeholder(name, i)))
                            .collect(),
                    )
                } else {
                    Value::String(placeholder(name, 0))
                }
            } else {
                match name.as_str() {
                    "uses" => {
                        Value::Array(uses.iter().map(|u| Value::String(u.to_string())).collect())
                    }
                    "queue_triggered" => Value::Bool(queue_triggered),
                    "name" => Value::String(f.name.clone()),
                    "function_name" => Value::String(format!("stratus-{}", f.name)),
                    "function" | "manifest" => from_json(&fn_json),
                    n if fn_json.get(n).is_some() => from_json(&fn_json[n]),
                    _ if !default.is_null() => default.clone(),
                    _ if ty == "string" => Value::String(format!("ph-{name}")),
                    _ if ty == "number" => Value::from(1),
                    _ if ty == "bool" => Value::Bool(false),
                    _ if ty.starts_with("list")
                        || ty.starts_with("set")
                        || ty.starts_with("tuple") =>
                    {
                        Value::Array(vec![])
                    }
                    _ if ty.starts_with("map") || ty.starts_with("object") => {
                        Value::Object(hcl::Map::new())
                    }
                    _ => Value::Null,
                }
            };
            var.insert(name.clone(), v);
        }
        // The log group's ARN built from the function's name (no log group resource needed).
        let log_group = format!(":log-group:/aws/lambda/stratus-{}", f.name);
        let mut vars = vec![
            ("var".to_string(), Value::Object(var)),
            ("path".to_string(), path_var(&dir.join(module), dir)),
            (
                "data".to_string(),
                Value::Object(
                    data.iter()
                        .map(|(k, v)| (k.clone(), Value::Object(v.clone())))
                        .collect(),
                ),
            ),
        ];
        for (ty, names) in &resources {
            vars.push((ty.clone(), Value::Object(names.clone())));
        }
        let statements = match eval_locals(&files, module, dir, vars, &["policy_statements"]) {
            Ok(l) => to_json(&l["policy_statements"]),
            Err(e) => {
                problems.push(format!("function {}: {e}", f.name));
                continue;
            }
        };
        let Some(statements) = statements.as_array().cloned() else {
            problems.push(format!(
                "function {}: local.policy_statements is not a list: {statements}",
                f.name
            ));
            continue;
        };
        total_statements += statements.len();
        if queue_triggered {
            uses.push("queue-triggered");
        }
        uses.push("always");
        let mut granted: BTreeSet<(String, Res)> = BTreeSet::new();
        println!("function {} uses {:?}:", f.name, uses);
        for s in &statements {
            let actions = strings(&s["Action"]);
            let res = strings(&s["Resource"]);
            println!(
                "  {} {} {:?} on {:?}",
                s["Sid"].as_str().unwrap_or("-"),
                s["Effect"].as_str().unwrap_or("?"),
                actions,
                res
            );
            if s["Effect"] != "Allow" {
                continue;
            }
            if s.get("NotAction").is_some() || s.get("NotResource").is_some() {
                problems.push(format!(
                    "function {}: statement {} uses NotAction/NotResource",
                    f.name, s["Sid"]
                ));
            }
            if actions.is_empty() || res.is_empty() {
                problems.push(format!(
                    "function {}: statement {} has no action or no resource",
                    f.name, s["Sid"]
                ));
            }
            for a in &actions {
                if a.contains('*') {
                    problems.push(format!("function {}: wildcard action {a}", f.name));
                }
                for r in &res {
                    if r == "*" {
                        let queue_ok = queue_triggered && QUEUE_STAR_ACTIONS.contains(&a.as_str());
                        if !STAR_ACTIONS.contains(&a.as_str()) && !queue_ok {
                            problems.push(format!("function {}: {a} on \"*\" (only the VPC network-interface and X-Ray actions, and for queue-triggered functions the broker poller's ec2:Describe*, may have \"*\")", f.name));
                        }
                        continue;
                    }
                    let class = if r.starts_with("arn:")
                        && (r.ends_with(&log_group)
                            || r.ends_with(&format!("{log_group}:*"))
                            || r.ends_with(&format!("{log_group}:log-stream:*")))
                        && !r.trim_end_matches(":*").contains('*')
                    {
                        Some(Res::LogGroup)
                    } else {
                        classify(r, &placeholders)
                    };
                    let Some(class) = class else {
                        problems.push(format!("function {}: {a} on {r}: not a resource any use allows (nor its own log group)", f.name));
                        continue;
                    };
                    let service = a.split(':').next().unwrap_or("");
                    if service != service_of(class) {
                        // An action of another service grants nothing on this resource.
                        continue;
                    }
                    let allowed = ALLOWED.iter().any(|(u, c, acts)| {
                        uses.contains(u) && *c == class && acts.contains(&a.as_str())
                    });
                    if !allowed {
                        problems.push(format!(
                            "function {}: {a} on {r} ({class:?}) is not allowed by uses {:?}",
                            f.name, uses
                        ));
                    }
                    granted.insert((a.clone(), class));
                }
            }
        }
        // Not too little: every use's needs are granted.
        let star: BTreeSet<String> = statements
            .iter()
            .filter(|s| s["Effect"] == "Allow" && strings(&s["Resource"]).iter().any(|r| r == "*"))
            .flat_map(|s| strings(&s["Action"]))
            .collect();
        for (u, class, acts) in REQUIRED {
            if !uses.contains(u) {
                continue;
            }
            for a in *acts {
                if !granted.contains(&(a.to_string(), *class)) {
                    problems.push(format!(
                        "function {}: uses {u} but {a} on {class:?} is not granted",
                        f.name
                    ));
                }
            }
        }
        for a in [
            "ec2:CreateNetworkInterface",
            "ec2:DescribeNetworkInterfaces",
            "ec2:DeleteNetworkInterface",
            "xray:PutTraceSegments",
            "xray:PutTelemetryRecords",
        ] {
            if !star.contains(a) {
                problems.push(format!(
                    "function {}: {a} on \"*\" is not granted (Lambda in a VPC, tracing Active)",
                    f.name
                ));
            }
        }
    }
    println!(
        "iam: {} functions, {} statements in all; {} problem(s)",
        manifest.functions.len(),
        total_statements,
        problems.len()
    );
    problems
}

// ---------------------------------------------------------------------------------------
// c. python-hcl2, checkov, skip reasons

/// The venv scripts/test makes (ensure_iac_venv): STRATUS_IAC_VENV, else .venv-iac.
fn iac_venv() -> PathBuf {
    if let Ok(v) = std::env::var("STRATUS_IAC_VENV") {
        return PathBuf::from(v);
    }
    let v = repo().join(".venv-iac");
    assert!(
        v.join("bin/python").exists() && v.join("bin/checkov").exists(),
        "STRATUS_IAC_VENV is unset and {} is missing: run scripts/test (it installs tests/requirements-iac.txt there), or `source scripts/lib.sh && ensure_iac_venv`",
        v.display()
    );
    v
}

fn check_python_hcl2(dir: &Path) -> Vec<String> {
    let venv = iac_venv();
    let script = r#"
import sys, pathlib, hcl2
bad = 0
n = 0
for p in sorted(pathlib.Path(sys.argv[1]).rglob("*.tf")):
    if any(part.startswith(".") for part in p.relative_to(sys.argv[1]).parts):
        continue
    n += 1
    try:
        with open(p) as f:
            hcl2.load(f)
    except Exception as e:
        bad += 1
        print(f"PARSE-ERROR {p}: {e}".replace("\n", " "))
print(f"parsed {n} files, {bad} failed, python-hcl2 from {hcl2.__file__}")
"#;
    let out = Command::new(venv.join("bin/python"))
        .env("PYTHONPATH", venv.join("hcl2"))
        .args(["-c", script])
        .arg(dir)
        .output()
        .expect("runs the iac venv's python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!(
        "python-hcl2: {}{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    let mut problems: Vec<String> = stdout
        .lines()
        .filter(|l| l.starts_with("PARSE-ERROR"))
        .map(String::from)
        .collect();
    if !out.status.success() {
        problems.push(format!(
            "python-hcl2 run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    if !stdout.contains(&format!("{}/hcl2", venv.join("hcl2").display())) {
        problems.push("python-hcl2 was not imported from the iac venv's hcl2 folder".into());
    }
    problems
}

/// (passed, skipped, problems)
fn check_checkov(dir: &Path) -> (u64, u64, Vec<String>) {
    let venv = iac_venv();
    let out = Command::new(venv.join("bin/checkov"))
        .args(["-d"])
        .arg(dir)
        .args([
            "--framework",
            "terraform",
            "--compact",
            "--quiet",
            "-o",
            "json",
            "--skip-download",
        ])
        .env("BC_SKIP_MAPPING", "TRUE")
        .env("CHECKOV_RUN_SCA_PACKAGE_SCAN_V2", "false")
        .output()
        .expect("runs checkov");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json: Json = match serde_json::from_str(stdout.trim()) {
        Ok(j) => j,
        Err(e) => {
            return (
                0,
                0,
                vec![format!(
                    "checkov's output is not JSON ({e}): {stdout} {}",
                    String::from_utf8_lossy(&out.stderr)
                )],
            );
        }
    };
    let reports: Vec<Json> = match json {
        Json::Array(a) => a,
        other => vec![other],
    };
    let (mut passed, mut failed, mut skipped, mut parse_errors) = (0, 0, 0, 0);
    let mut problems = Vec::new();
    for r in &reports {
        let s = &r["summary"];
        passed += s["passed"].as_u64().unwrap_or(0);
        failed += s["failed"].as_u64().unwrap_or(0);
        skipped += s["skipped"].as_u64().unwrap_or(0);
        parse_errors += s["parsing_errors"].as_u64().unwrap_or(0);
        for c in r["results"]["failed_checks"]
            .as_array()
            .into_iter()
            .flatten()
        {
            problems.push(format!(
                "checkov {} {} on {} ({}:{:?})",
                c["check_id"].as_str().unwrap_or(""),
                c["check_name"].as_str().unwrap_or(""),
                c["resource"].as_str().unwrap_or(""),
                c["file_path"].as_str().unwrap_or(""),
                c["file_line_range"]
            ));
        }
    }
    println!(
        "checkov: {passed} passed, {failed} failed, {skipped} skipped, {parse_errors} parsing errors"
    );
    if failed as usize > problems.len() {
        problems.push(format!("checkov reports {failed} failed checks"));
    }
    if parse_errors > 0 {
        problems.push(format!("checkov: {parse_errors} parsing errors"));
    }
    if passed == 0 {
        problems.push(format!(
            "checkov passed no check: did it read {}?",
            dir.display()
        ));
    }
    (passed, skipped, problems)
}

/// Every `#checkov:skip=CKV_...:<reason>` carries a reason.
fn check_skip_reasons(dir: &Path) -> (usize, Vec<String>) {
    let re = regex::Regex::new(r"^\s*(#|//)\s*checkov:skip=([A-Za-z0-9_]+)(?::(.*))?$").unwrap();
    let mut count = 0;
    let mut problems = Vec::new();
    for p in tf_paths(dir) {
        let text = std::fs::read_to_string(&p).unwrap();
        for (i, line) in text.lines().enumerate() {
            if !line.contains("checkov:skip") {
                continue;
            }
            count += 1;
            let at = format!("{}:{}", p.strip_prefix(dir).unwrap().display(), i + 1);
            match re.captures(line) {
                Some(c) if c.get(3).is_some_and(|r| r.as_str().trim().len() >= 10) => {}
                Some(c) => problems.push(format!(
                    "{at}: skip of {} has no reason after the colon: {line:?}",
                    &c[2]
                )),
                None => problems.push(format!(
                    "{at}: not a `#checkov:skip=CKV_ID:reason` line: {line:?}"
                )),
            }
        }
    }
    println!(
        "checkov skips in the code: {count}, {} without a reason",
        problems.len()
    );
    (count, problems)
}

// ---------------------------------------------------------------------------------------
// d. terraform fmt / validate

fn terraform_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for name in ["terraform", "tofu"] {
        for d in std::env::split_paths(&path) {
            let p = d.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// Ok(None): skipped (printed); Ok(Some(())) ran and passed; Err: the failure.
fn check_fmt(dir: &Path) -> Result<Option<()>, String> {
    let Some(tf) = terraform_binary() else {
        println!(
            "SKIPPED: terraform fmt -check: no terraform binary (neither terraform nor tofu on PATH)"
        );
        return Ok(None);
    };
    let out = Command::new(&tf)
        .args(["fmt", "-check", "-recursive", "-diff"])
        .current_dir(dir)
        .output()
        .unwrap();
    println!(
        "{} fmt -check -recursive: exit {:?}",
        tf.display(),
        out.status.code()
    );
    if out.status.success() {
        Ok(Some(()))
    } else {
        Err(format!(
            "terraform fmt -check: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap();
        if name.to_string_lossy().starts_with(".terraform") {
            continue;
        }
        if p.is_dir() {
            copy_dir(&p, &to.join(name));
        } else {
            std::fs::copy(&p, to.join(name)).unwrap();
        }
    }
}

/// A temporary copy of the terraform dir at <tmp>/terraform with ../infra and ../dist
/// linked, as the real one sees them.
fn temp_copy(dir: &Path, tag: &str) -> PathBuf {
    // Unique per call: tests run in parallel threads of one process.
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let root = std::env::temp_dir().join(format!("stratus-tf-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    copy_dir(dir, &root.join("terraform"));
    for l in ["infra", "dist"] {
        let _ = std::os::unix::fs::symlink(repo().join(l), root.join(l));
    }
    root.join("terraform")
}

/// `terraform init` in a temporary copy of `dir` (init writes .terraform/ and a lock file).
/// Offline, the providers come from a local mirror: STRATUS_TF_PLUGIN_DIR, or
/// /opt/tf-plugins where the machine image has one (hashicorp/aws).
/// Ok(None): skipped, the reason printed with `what`; Ok(Some((binary, copy))) to use and
/// then remove with `cleanup`.
fn init_copy(dir: &Path, tag: &str, what: &str) -> Result<Option<(PathBuf, PathBuf)>, String> {
    let Some(tf) = terraform_binary() else {
        println!("SKIPPED: {what}: no terraform binary (neither terraform nor tofu on PATH)");
        return Ok(None);
    };
    let copy = temp_copy(dir, tag);
    let mirror = std::env::var_os("STRATUS_TF_PLUGIN_DIR")
        .map(PathBuf::from)
        .or_else(|| Some(PathBuf::from("/opt/tf-plugins")).filter(|p| p.is_dir()));
    let mut init_args = vec!["init", "-backend=false", "-input=false", "-no-color"]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
    if let Some(m) = &mirror {
        println!("terraform init: providers from the mirror {}", m.display());
        init_args.push(format!("-plugin-dir={}", m.display()));
    }
    let init = Command::new(&tf)
        .args(&init_args)
        .current_dir(&copy)
        .env("TF_IN_AUTOMATION", "1")
        .output()
        .unwrap();
    if !init.status.success() {
        let err = String::from_utf8_lossy(&init.stderr).to_string();
        let _ = std::fs::remove_dir_all(copy.parent().unwrap());
        let offline = [
            "Failed to query available provider packages",
            "Failed to resolve provider packages",
            "Failed to install provider",
            "could not connect",
            "no such host",
            "registry.terraform.io",
        ];
        if offline.iter().any(|m| err.contains(m)) {
            let first = err
                .lines()
                .map(str::trim)
                .find(|l| l.starts_with("Error:") || l.contains("Failed"))
                .unwrap_or("")
                .to_string();
            println!("SKIPPED: {what}: terraform init cannot get the providers offline ({first})");
            return Ok(None);
        }
        return Err(format!("terraform init failed: {err}"));
    }
    Ok(Some((tf, copy)))
}

fn check_validate(dir: &Path) -> Result<Option<()>, String> {
    let Some((tf, copy)) = init_copy(dir, "validate", "terraform validate")? else {
        return Ok(None);
    };
    let out = Command::new(&tf)
        .args(["validate", "-no-color"])
        .current_dir(&copy)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(copy.parent().unwrap());
    println!(
        "terraform validate: exit {:?} {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).trim()
    );
    if out.status.success() {
        Ok(Some(()))
    } else {
        Err(format!(
            "terraform validate: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

// ---------------------------------------------------------------------------------------
// e. terraform test (terraform/tests/*.tftest.hcl, hashicorp/aws mocked)

/// (major, minor) of `terraform version` / `tofu version`.
fn terraform_version(tf: &Path) -> Option<(u32, u32)> {
    let out = Command::new(tf).arg("version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let re = regex::Regex::new(r"(?m)^(?:Terraform|OpenTofu) v(\d+)\.(\d+)").unwrap();
    let c = re.captures(&text)?;
    Some((c[1].parse().ok()?, c[2].parse().ok()?))
}

/// What `terraform test` reported.
#[derive(Debug)]
struct TfTest {
    passed: u64,
    failed: u64,
    /// (run name, "pass" | "fail" | "skip" | ...), in the order they ran.
    runs: Vec<(String, String)>,
    asserts: usize,
    secs: f64,
}

/// The `assert { ... }` blocks of terraform/tests/*.tftest.hcl.
fn tftest_files(dir: &Path) -> Vec<(String, String)> {
    let Ok(rd) = std::fs::read_dir(dir.join("tests")) else {
        return Vec::new();
    };
    let mut files: Vec<_> = rd
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".tftest.hcl"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().to_string(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

/// Runs `terraform test` in an initialised copy of `dir` (bounded: 15 minutes).
/// Ok(None): skipped (printed); Err: a failed run, with terraform's output.
fn check_terraform_test(dir: &Path) -> Result<Option<TfTest>, String> {
    let files = tftest_files(dir);
    if files.is_empty() {
        return Err(format!("no tests/*.tftest.hcl under {}", dir.display()));
    }
    let asserts: usize = files
        .iter()
        .map(|(_, t)| t.lines().filter(|l| l.trim() == "assert {").count())
        .sum();
    if let Some(tf) = terraform_binary() {
        // mock_provider: Terraform 1.7, OpenTofu 1.8.
        let least = if tf.ends_with("tofu") { (1, 8) } else { (1, 7) };
        match terraform_version(&tf) {
            Some(v) if v >= least => {}
            v => {
                println!(
                    "SKIPPED: terraform test: {} is {v:?}, mock_provider needs {least:?} or later",
                    tf.display()
                );
                return Ok(None);
            }
        }
    }
    let Some((tf, copy)) = init_copy(dir, "tftest", "terraform test")? else {
        return Ok(None);
    };
    // Output to files, not pipes: a failure prints whole values, and the wait is bounded.
    let out_path = copy.parent().unwrap().join("tftest.out");
    let started = std::time::Instant::now();
    let mut child = Command::new(&tf)
        .args(["test", "-no-color"])
        .current_dir(&copy)
        .env("TF_IN_AUTOMATION", "1")
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(out_path.with_extension("err")).unwrap())
        .spawn()
        .unwrap();
    let limit = std::time::Duration::from_secs(900);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let secs = started.elapsed().as_secs_f64();
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(out_path.with_extension("err")).unwrap_or_default();
    let _ = std::fs::remove_dir_all(copy.parent().unwrap());
    let Some(status) = status else {
        return Err(format!(
            "terraform test: still running after {}s, killed:\n{stdout}",
            limit.as_secs()
        ));
    };
    let run_re = regex::Regex::new(r#"(?m)^\s+run "([^"]+)"\.\.\. (\w+)"#).unwrap();
    let runs: Vec<(String, String)> = run_re
        .captures_iter(&stdout)
        .map(|c| (c[1].to_string(), c[2].to_string()))
        .collect();
    let total_re =
        regex::Regex::new(r"(?m)^(?:Success|Failure)! (\d+) passed, (\d+) failed").unwrap();
    let (passed, failed) = total_re
        .captures(&stdout)
        .map(|c| (c[1].parse().unwrap(), c[2].parse().unwrap()))
        .unwrap_or((0, 0));
    println!(
        "terraform test: exit {:?} in {secs:.1}s: {passed} passed, {failed} failed ({} runs, {asserts} assertions in {} file(s))",
        status.code(),
        runs.len(),
        files.len()
    );
    for (name, result) in &runs {
        println!("  run {name:?}: {result}");
    }
    let result = TfTest {
        passed,
        failed,
        runs,
        asserts,
        secs,
    };
    if status.success() && result.failed == 0 && result.passed > 0 {
        Ok(Some(result))
    } else {
        Err(format!(
            "terraform test: exit {:?}, {} passed, {} failed, runs {:?}:\n{stdout}\n{stderr}",
            status.code(),
            result.passed,
            result.failed,
            result.runs
        ))
    }
}

/// Every root output is in the tests' list of outputs that must not hold the broker's
/// password (`output.<name>` in a tftest file), so a new output is checked too.
fn check_outputs_in_tftest(dir: &Path) -> Vec<String> {
    let files = match load_tf(dir) {
        Ok(f) => f,
        Err(p) => return p,
    };
    let tests: String = tftest_files(dir).into_iter().map(|(_, t)| t).collect();
    let outputs: Vec<String> = decls(&files)
        .into_iter()
        .filter(|d| d.kind() == "output" && d.file.module_dir().is_empty())
        .map(|d| d.label(0).to_string())
        .collect();
    println!(
        "root outputs: {}, each named in terraform/tests",
        outputs.len()
    );
    outputs
        .iter()
        .filter(|o| {
            !regex::Regex::new(&format!(r"\boutput\.{}\b", regex::escape(o)))
                .unwrap()
                .is_match(&tests)
        })
        .map(|o| format!("output {o:?} is not in terraform/tests' no-secret assertion"))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Tests on terraform/

fn raw_manifest() -> Json {
    serde_json::from_str(&std::fs::read_to_string(repo().join("infra/manifest.json")).unwrap())
        .unwrap()
}

fn assert_none(what: &str, problems: &[String]) {
    assert!(
        problems.is_empty(),
        "{what}: {} problem(s):\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}

#[test]
fn coverage_every_manifest_entry_has_its_resource_and_nothing_else() {
    let p = check_coverage(&terraform_dir(), &manifest(), &raw_manifest());
    assert_none("coverage", &p);
}

#[test]
fn iam_each_function_gets_only_and_all_of_what_it_uses() {
    let p = check_iam(&terraform_dir(), &manifest());
    assert_none("iam", &p);
}

#[test]
fn python_hcl2_parses_every_file() {
    assert_none("python-hcl2", &check_python_hcl2(&terraform_dir()));
}

#[test]
fn checkov_has_no_failed_check_and_every_skip_has_a_reason() {
    let (count, reasons) = check_skip_reasons(&terraform_dir());
    let (passed, skipped, problems) = check_checkov(&terraform_dir());
    println!("checkov totals: {passed} passed, {skipped} skipped; {count} skip comments");
    assert_none("checkov skip reasons", &reasons);
    assert_none("checkov", &problems);
}

#[test]
fn terraform_fmt_and_validate_when_a_binary_is_on_path() {
    check_fmt(&terraform_dir()).unwrap();
    check_validate(&terraform_dir()).unwrap();
}

/// Nothing invokes a function before the startup invocation (the bootstrap) has
/// declared the broker's topology and made the secret key's parameter: every
/// resource that starts invocations (queue triggers, schedule targets, the
/// permission that lets API Gateway in) depends on it.
fn check_startup_first(dir: &Path) -> Vec<String> {
    let files = match load_tf(dir) {
        Ok(f) => f,
        Err(p) => return p,
    };
    let mut problems = Vec::new();
    let mut seen = 0;
    for d in decls(&files) {
        let starts_invocations = match (d.kind(), d.label(0)) {
            ("resource", "aws_lambda_event_source_mapping" | "aws_cloudwatch_event_target") => true,
            // EventBridge invokes through the target above; API Gateway through
            // the route, once this permission lets it.
            ("resource", "aws_lambda_permission") => d
                .attr_text("principal")
                .contains("apigateway.amazonaws.com"),
            _ => false,
        };
        if !starts_invocations {
            continue;
        }
        seen += 1;
        if !d
            .attr_text("depends_on")
            .contains("aws_lambda_invocation.startup")
        {
            problems.push(format!(
                "{}: may invoke a function before the startup invocation (no depends_on aws_lambda_invocation.startup)",
                d.at()
            ));
        }
    }
    if seen == 0 {
        problems.push("no resource that invokes a function was found".into());
    }
    problems
}

#[test]
fn nothing_invokes_a_function_before_the_startup_invocation() {
    assert_none("startup first", &check_startup_first(&terraform_dir()));
}

// ---------------------------------------------------------------------------------------
// Negative tests: the same checks fail on broken copies.

/// Removes the block that starts with `header` (up to its closing `}` at column 0).
fn remove_block(dir: &Path, header: &str) -> String {
    for p in tf_paths(dir) {
        let text = std::fs::read_to_string(&p).unwrap();
        if let Some(start) = text.find(header) {
            let end = text[start..].find("\n}\n").map(|e| start + e + 3).unwrap();
            std::fs::write(&p, format!("{}{}", &text[..start], &text[end..])).unwrap();
            return p.strip_prefix(dir).unwrap().display().to_string();
        }
    }
    panic!("no block {header} in {}", dir.display());
}

fn cleanup(copy: &Path) {
    let _ = std::fs::remove_dir_all(copy.parent().unwrap());
}

#[test]
fn coverage_fails_on_a_missing_or_extra_resource_or_manifest_entry() {
    // A removed event source mapping.
    let copy = temp_copy(&terraform_dir(), "cov-removed");
    let file = remove_block(&copy, "resource \"aws_lambda_event_source_mapping\"");
    let p = check_coverage(&copy, &manifest(), &raw_manifest());
    println!("removed aws_lambda_event_source_mapping from {file}: {p:?}");
    assert!(
        p.iter()
            .any(|m| m.contains("aws_lambda_event_source_mapping")),
        "{p:?}"
    );
    cleanup(&copy);

    // An extra function and an extra table.
    let copy = temp_copy(&terraform_dir(), "cov-extra");
    std::fs::write(
        copy.join("zz_extra.tf"),
        "resource \"aws_lambda_function\" \"rogue\" {\n  function_name = \"rogue\"\n}\n\nresource \"aws_dynamodb_table\" \"other\" {\n  name = \"other\"\n}\n",
    )
    .unwrap();
    let p = check_coverage(&copy, &manifest(), &raw_manifest());
    println!("extra resources: {p:?}");
    assert!(
        p.iter()
            .any(|m| m.contains("aws_lambda_function") && m.contains("found 2")),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|m| m.contains("aws_dynamodb_table") && m.contains("found 2")),
        "{p:?}"
    );
    cleanup(&copy);

    // A manifest with a function, queue, schedule, route and startup Terraform lacks.
    let mut m = manifest();
    let mut ghost = m.functions[0].clone();
    ghost.name = "ghost".into();
    ghost.triggers = vec![
        Trigger::Queue {
            queue: "stratus.fn.ghost".into(),
            batch_size: 1,
            batching_window_ms: 0,
            concurrency: 1,
        },
        Trigger::Schedule {
            expression: "rate(2 seconds)".into(),
        },
        Trigger::Http {
            route: "/ghost".into(),
            methods: vec!["GET".into()],
        },
        Trigger::Startup {
            event: Default::default(),
        },
    ];
    m.functions.push(ghost);
    let p = check_coverage(&terraform_dir(), &m, &raw_manifest());
    println!("ghost function: {p:?}");
    for (local, key) in [
        ("functions", "ghost"),
        ("queue_triggers", "ghost/stratus.fn.ghost"),
        ("schedules", "ghost/1"),
        ("http_routes", "GET /ghost"),
        ("startups", "ghost"),
    ] {
        assert!(
            p.iter()
                .any(|x| x.contains(&format!("local.{local} ")) && x.contains(key)),
            "{local} {key}: {p:?}"
        );
    }

    // A trigger type this test does not know.
    let mut raw = raw_manifest();
    raw["functions"][0]["triggers"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"type": "carrier-pigeon"}));
    let p = check_coverage(&terraform_dir(), &manifest(), &raw);
    assert!(p.iter().any(|x| x.contains("carrier-pigeon")), "{p:?}");
}

/// Renames local.policy_statements to policy_statements_base in the copy and defines
/// policy_statements = <expr over local.policy_statements_base> in a new file.
fn wrap_policy(copy: &Path, expr: &str) {
    let module = copy.join("modules/function");
    let mut done = false;
    for p in tf_paths(&module) {
        let text = std::fs::read_to_string(&p).unwrap();
        let re = regex::Regex::new(r"(?m)^(\s*)policy_statements(\s*)=").unwrap();
        if re.is_match(&text) {
            std::fs::write(
                &p,
                re.replace(&text, "${1}policy_statements_base${2}=")
                    .as_ref(),
            )
            .unwrap();
            done = true;
        }
    }
    assert!(done, "no policy_statements local in {}", module.display());
    std::fs::write(
        module.join("zz_negative.tf"),
        format!("locals {{\n  policy_statements = {expr}\n}}\n"),
    )
    .unwrap();
}

#[test]
fn iam_fails_on_an_extra_or_missing_grant() {
    // network uses table and broker only: the Consul parameters are one too many.
    let copy = temp_copy(&terraform_dir(), "iam-extra");
    wrap_policy(
        &copy,
        r#"concat(local.policy_statements_base, var.name == "network" ? [{ Sid = "Extra", Effect = "Allow", Action = ["ssm:GetParameter"], Resource = var.consul_parameter_arns }] : [])"#,
    );
    let p = check_iam(&copy, &manifest());
    println!("extra grant: {p:?}");
    assert!(
        p.iter()
            .any(|m| m.starts_with("function network: ssm:GetParameter")
                && m.contains("ConsulAddress")),
        "{p:?}"
    );
    assert!(!p.iter().any(|m| m.starts_with("function api:")), "{p:?}");
    cleanup(&copy);

    // A resource that is no placeholder (a wildcard ARN) and an action on "*".
    let copy = temp_copy(&terraform_dir(), "iam-wild");
    wrap_policy(
        &copy,
        r#"concat(local.policy_statements_base, [{ Sid = "Wild", Effect = "Allow", Action = ["ssm:GetParameter"], Resource = ["arn:aws:ssm:*:*:parameter/*"] }, { Sid = "Star", Effect = "Allow", Action = ["dynamodb:GetItem"], Resource = "*" }])"#,
    );
    let p = check_iam(&copy, &manifest());
    assert!(
        p.iter().any(|m| m.contains("parameter/*: not a resource")),
        "{p:?}"
    );
    assert!(
        p.iter().any(|m| m.contains("dynamodb:GetItem on \"*\"")),
        "{p:?}"
    );
    cleanup(&copy);

    // Too little: the Query grants gone.
    let copy = temp_copy(&terraform_dir(), "iam-missing");
    wrap_policy(
        &copy,
        r#"[for s in local.policy_statements_base : s if !contains(flatten([s.Action]), "dynamodb:Query")]"#,
    );
    let p = check_iam(&copy, &manifest());
    println!("missing grant: {p:?}");
    assert!(
        p.iter()
            .any(|m| m.starts_with("function api: uses table but dynamodb:Query")),
        "{p:?}"
    );
    cleanup(&copy);
}

#[test]
fn the_startup_check_fails_when_a_trigger_does_not_wait() {
    let copy = temp_copy(&terraform_dir(), "startup-first");
    let api = copy.join("api.tf");
    let text = std::fs::read_to_string(&api).unwrap();
    let without = text.replace("depends_on = [aws_lambda_invocation.startup]", "");
    assert_ne!(
        text, without,
        "api.tf's permission waits for the startup invocation"
    );
    std::fs::write(&api, without).unwrap();
    let p = check_startup_first(&copy);
    println!("startup check on a copy whose API permission does not wait: {p:?}");
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].contains("aws_lambda_permission") && p[0].contains("api"),
        "{p:?}"
    );
    cleanup(&copy);
}

#[test]
fn hcl_checks_fail_on_a_broken_copy() {
    let copy = temp_copy(&terraform_dir(), "hcl-broken");
    std::fs::write(
        copy.join("zz_broken.tf"),
        "resource \"aws_s3_bucket\" \"b\" {\n  bucket = \n",
    )
    .unwrap();
    assert!(load_tf(&copy).is_err());
    let p = check_python_hcl2(&copy);
    println!("python-hcl2 on a broken file: {p:?}");
    assert!(p.iter().any(|m| m.contains("zz_broken.tf")), "{p:?}");
    if terraform_binary().is_some() {
        assert!(check_fmt(&copy).is_err());
    }
    cleanup(&copy);

    let copy = temp_copy(&terraform_dir(), "fmt-bad");
    std::fs::write(
        copy.join("zz_fmt.tf"),
        "locals {\n    x = 1\n  longer_name = 2\n}\n",
    )
    .unwrap();
    if terraform_binary().is_some() {
        let e = check_fmt(&copy).unwrap_err();
        println!("fmt on a misformatted file: {e}");
        assert!(e.contains("zz_fmt.tf"), "{e}");
    }
    cleanup(&copy);
}

#[test]
fn checkov_fails_on_an_unencrypted_log_group_and_a_skip_without_reason() {
    let copy = temp_copy(&terraform_dir(), "checkov-bad");
    std::fs::write(
        copy.join("zz_bad.tf"),
        "resource \"aws_cloudwatch_log_group\" \"bad\" {\n  #checkov:skip=CKV_AWS_338\n  name = \"bad\"\n}\n",
    )
    .unwrap();
    let (_, reasons) = check_skip_reasons(&copy);
    assert!(
        reasons
            .iter()
            .any(|m| m.contains("zz_bad.tf") && m.contains("CKV_AWS_338")),
        "{reasons:?}"
    );
    let (_, _, problems) = check_checkov(&copy);
    println!("checkov on a bad log group: {problems:?}");
    assert!(
        problems
            .iter()
            .any(|m| m.contains("CKV_AWS_158") && m.contains("aws_cloudwatch_log_group.bad")),
        "{problems:?}"
    );
    cleanup(&copy);
}

/// The environment Terraform gives the functions: `common_environment` (every
/// function) and `use_environment` (per manifest use: the references only a
/// function that uses the resource gets) hold, together, the variables the
/// local runner gives (`Config::to_env`), plus the broker credentials'
/// reference and the bootstrap's two names, and nothing else; and every use
/// named there is one the manifest knows.
fn check_common_environment(dir: &Path) -> Vec<String> {
    let files = match load_tf(dir) {
        Ok(f) => f,
        Err(p) => return p,
    };
    let local = |name: &str| {
        decls(&files)
            .into_iter()
            .filter(|d| d.kind() == "locals")
            .find_map(|d| d.attr(name).cloned())
    };
    let key_text = |k: &hcl::expr::ObjectKey| match k {
        hcl::expr::ObjectKey::Identifier(i) => i.to_string(),
        hcl::expr::ObjectKey::Expression(e) => expr_text(e).trim_matches('"').to_string(),
        other => format!("{other:?}"),
    };
    let (Some(Expression::Object(common)), Some(Expression::Object(by_use))) =
        (local("common_environment"), local("use_environment"))
    else {
        return vec![
            "no locals { common_environment = {...} use_environment = {...} } objects in terraform/"
                .into(),
        ];
    };
    let mut problems = Vec::new();
    let mut got: BTreeSet<String> = common.keys().map(key_text).collect();
    for (u, vars) in by_use.iter() {
        let u = key_text(u);
        if serde_json::from_value::<stratus_contracts::manifest::Use>(Json::String(u.clone()))
            .is_err()
        {
            problems.push(format!("use_environment names {u:?}, not a manifest use"));
        }
        match vars {
            Expression::Object(o) => got.extend(o.keys().map(key_text)),
            _ => problems.push(format!("use_environment.{u} is not an object")),
        }
    }
    // Every variable the runner hands a function (with a Consul address, so
    // the optional ones are there too).
    let config = stratus_contracts::config::Config::from_lookup(|k| match k {
        "CONSUL_HTTP_ADDR" => Some("127.0.0.1:8500".into()),
        "CONSUL_HTTP_TOKEN" => Some("t".into()),
        "HOME" => Some("/root".into()),
        _ => None,
    })
    .unwrap();
    let mut want: BTreeSet<String> = config.to_env().iter().map(|(k, _)| k.to_string()).collect();
    want.insert(stratus_contracts::config::ENV_AMQP_CREDENTIALS.to_string());
    want.insert(stratus_secrets::aws_refs::ENV_KMS_KEY_ID.to_string());
    want.insert("STRATUS_ADMIN_KEYS_SECRET".to_string());
    for missing in want.difference(&got) {
        problems.push(format!(
            "the functions' environment lacks {missing}, which the runner gives"
        ));
    }
    for extra in got.difference(&want) {
        problems.push(format!(
            "the functions' environment sets {extra}, which no Stratus process reads"
        ));
    }
    println!(
        "functions' environment: {} variables, {} problems",
        got.len(),
        problems.len()
    );
    problems
}

#[test]
fn every_function_gets_the_configuration_the_runner_gives() {
    let problems = check_common_environment(&terraform_dir());
    assert!(problems.is_empty(), "{problems:#?}");
    // And the check fails on a drift: a variable dropped from the object.
    let copy = temp_copy(&terraform_dir(), "env");
    let main = copy.join("main.tf");
    let text = std::fs::read_to_string(&main).unwrap();
    let dropped: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("STRATUS_AMQP_HEARTBEAT"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(dropped, text);
    std::fs::write(&main, dropped).unwrap();
    let problems = check_common_environment(&copy);
    let _ = std::fs::remove_dir_all(copy.parent().unwrap());
    assert_eq!(
        problems,
        vec![
            "the functions' environment lacks STRATUS_AMQP_HEARTBEAT, which the runner gives"
                .to_string()
        ]
    );
}

// ---------------------------------------------------------------------------------------
// terraform test: the real evaluation, provider mocked (terraform/tests/*.tftest.hcl)

#[test]
fn terraform_test_with_the_provider_mocked() {
    assert_none(
        "outputs in terraform/tests",
        &check_outputs_in_tftest(&terraform_dir()),
    );
    if let Some(r) = check_terraform_test(&terraform_dir()).unwrap() {
        println!(
            "terraform test: {} runs passed, {} failed, {} assertions, {:.1}s",
            r.passed, r.failed, r.asserts, r.secs
        );
        assert!(r.runs.iter().all(|(_, res)| res == "pass"), "{r:?}");
    }
}

/// The same checks fail on a broken copy: a configuration that stops declaring the
/// topology fails the startup run (and only it), and a new output missing from the
/// no-secret assertion is reported.
#[test]
fn terraform_test_fails_on_a_broken_copy() {
    let copy = temp_copy(&terraform_dir(), "tftest-output");
    let outputs = copy.join("outputs.tf");
    let mut text = std::fs::read_to_string(&outputs).unwrap();
    text.push_str("\noutput \"zz_new\" {\n  value = var.name\n}\n");
    std::fs::write(&outputs, text).unwrap();
    let p = check_outputs_in_tftest(&copy);
    cleanup(&copy);
    println!("a new output: {p:?}");
    assert_eq!(
        p,
        vec!["output \"zz_new\" is not in terraform/tests' no-secret assertion".to_string()]
    );

    let copy = temp_copy(&terraform_dir(), "tftest-broken");
    let functions = copy.join("functions.tf");
    let text = std::fs::read_to_string(&functions).unwrap();
    let broken = text.replace("declare_topology = true", "declare_topology = false");
    assert_ne!(broken, text, "functions.tf sets declare_topology = true");
    std::fs::write(&functions, broken).unwrap();
    // Only the startup run is kept in the copy (the whole file takes a minute
    // of the suite's time again): it must fail there.
    let tftest = copy.join("tests/deploy.tftest.hcl");
    let text = std::fs::read_to_string(&tftest).unwrap();
    let mut parts = text.split("\nrun \"");
    let head = parts.next().unwrap().to_string();
    let startup = parts
        .find(|p| p.starts_with("startup_invocation\""))
        .expect("a run \"startup_invocation\" in terraform/tests/deploy.tftest.hcl");
    std::fs::write(&tftest, format!("{head}\nrun \"{startup}")).unwrap();
    let result = check_terraform_test(&copy);
    cleanup(&copy);
    match result {
        Ok(None) => {} // skipped, reason printed
        Ok(Some(r)) => panic!("terraform test passed on a copy without declare_topology: {r:?}"),
        Err(e) => {
            let failed: Vec<&str> = e
                .lines()
                .filter_map(|l| l.trim().strip_prefix("run \""))
                .filter(|l| l.ends_with("... fail"))
                .collect();
            println!("without declare_topology, failed runs: {failed:?}");
            assert!(e.contains("declare_topology = true"), "{e}");
            assert_eq!(failed, vec!["startup_invocation\"... fail"], "{e}");
        }
    }
}
