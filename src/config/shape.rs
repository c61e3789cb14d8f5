//! Stage one of reading a config file: its shape, checked against [`KEYS`] before anything
//! reads a value, so that every problem of this kind is reported at once, each where it is.
//!
//! The file is parsed with toml's recovering parser (every syntax error, not the first).
//! Then each table and each key is held to its description in `keys.rs`: unknown tables and
//! keys (with the nearest known name suggested), values of the wrong type (with the fix
//! spelled out where it is plain: `port = 993`, `password_command = ["pass", "show",
//! "mail"]`), unknown enumerated values and providers, integers out of range. Whatever is
//! wrong is reported and taken out, and the rest goes on to stage two, the validation of
//! what the values mean together (`Validator` in `mod.rs`), which so never meets a value of
//! the wrong shape.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use toml::de::{DeArray, DeString, DeTable, DeValue};
use toml::Spanned;

use super::keys::{self, Key, Kind, MAILBOX_KEYS, TABLES};
use super::providers;

/// What stage one found.
pub(super) struct Shape<'i> {
    /// The file with every wrong entry taken out.
    pub root: Spanned<DeTable<'i>>,
    /// Each problem: where it is (a byte range of the text) and what it is.
    pub problems: Vec<(Range<usize>, String)>,
    pub meant: Meant,
    /// The file had syntax errors: what was read of it is what toml could recover.
    pub incomplete: bool,
}

/// Per table (by the start of its span), the keys the user evidently meant to set: given
/// with a wrong value, or misspelt close to the name. Stage two does not report them as
/// missing too: one mistake, one message.
#[derive(Debug, Default)]
pub(super) struct Meant(BTreeMap<usize, BTreeSet<&'static str>>);

impl Meant {
    /// Whether the table whose span starts at `table_start` meant to set `key`.
    pub fn has(&self, table_start: usize, key: &str) -> bool {
        self.0
            .get(&table_start)
            .is_some_and(|keys| keys.contains(key))
    }
}

/// Parses `text` and checks its shape. Never fails: what cannot be used is in `problems`.
pub(super) fn check(text: &str) -> Shape<'_> {
    let (mut root, errors) = DeTable::parse_recoverable(text);
    let mut shape = Checker::default();
    let incomplete = !errors.is_empty();
    for e in errors {
        shape.report(e.span().unwrap_or(0..0), e.message().trim().to_owned());
    }
    shape.root(root.get_mut());
    Shape {
        root,
        problems: shape.problems,
        meant: shape.meant,
        incomplete,
    }
}

#[derive(Default)]
struct Checker {
    problems: Vec<(Range<usize>, String)>,
    meant: Meant,
}

impl Checker {
    fn report(&mut self, span: Range<usize>, message: String) {
        self.problems.push((span, message));
    }

    fn root(&mut self, root: &mut DeTable<'_>) {
        retain(root, |name, value| {
            let span = value.span();
            let Some(table) = keys::table(name.get_ref()) else {
                let message = self.unknown_table(name.get_ref());
                self.report(name.span(), message);
                return false;
            };
            match (table.name, value.get_mut()) {
                ("accounts", DeValue::Array(items)) => {
                    retain_items(items, |item| {
                        let span = item.span();
                        match item.get_mut() {
                            DeValue::Table(t) => {
                                self.table("accounts", t, span.clone());
                                true
                            }
                            other => {
                                let message = format!(
                                    "each entry of `accounts` must be a table ([[accounts]]), \
                                     not {}",
                                    a(other)
                                );
                                self.report(span, message);
                                false
                            }
                        }
                    });
                    true
                }
                ("accounts", other) => {
                    let message = format!(
                        "`accounts` must be tables written [[accounts]], not {}",
                        a(other)
                    );
                    self.report(span, message);
                    false
                }
                (_, DeValue::Table(t)) => {
                    self.table(table.name, t, span);
                    true
                }
                (_, other) => {
                    let message = format!(
                        "`{}` must be a table written {}, not {}",
                        table.name,
                        table.header,
                        a(other)
                    );
                    self.report(span, message);
                    false
                }
            }
        });
    }

    /// An unknown top-level name: a misspelt table, or a key written above every table.
    fn unknown_table(&self, name: &str) -> String {
        if let Some(t) = keys::suggest(name, TABLES.iter().map(|t| t.name)) {
            let header = keys::table(t).map_or(t, |t| t.header);
            return format!("unknown table `{name}`; did you mean {header}?");
        }
        if let Some(k) = keys::KEYS.iter().find(|k| k.name == name) {
            let header = keys::table(k.table).map_or(k.table, |t| t.header);
            return format!(
                "`{name}` must be inside a table: it belongs under {header}, which must come \
                 before it"
            );
        }
        let known: Vec<&str> = TABLES.iter().map(|t| t.header).collect();
        format!(
            "unknown table `{name}`; the tables are {}",
            known.join(", ")
        )
    }

    /// Checks every key of `table` (called `name`), which spans `span`.
    fn table(&mut self, name: &'static str, table: &mut DeTable<'_>, span: Range<usize>) {
        let header = keys::table(name).map_or(name, |t| t.header);
        let mut meant = BTreeSet::new();
        retain(table, |key, value| {
            let Some(def) = keys::find(name, key.get_ref()) else {
                let message = self.unknown_key(name, header, key.get_ref(), &mut meant);
                self.report(key.span(), message);
                return false;
            };
            if self.value(def, value) {
                true
            } else {
                meant.insert(def.name);
                false
            }
        });
        if !meant.is_empty() {
            self.meant.0.entry(span.start).or_default().extend(meant);
        }
    }

    fn unknown_key(
        &self,
        table: &str,
        header: &str,
        key: &str,
        meant: &mut BTreeSet<&'static str>,
    ) -> String {
        let here = keys::KEYS.iter().filter(|k| k.table == table);
        if let Some(near) = keys::suggest(key, here.map(|k| k.name)) {
            if let Some(def) = keys::find(table, near) {
                meant.insert(def.name);
            }
            return format!("unknown key `{key}` in {header}; did you mean `{near}`?");
        }
        if let Some(other) = keys::KEYS.iter().find(|k| k.name == key) {
            let there = keys::table(other.table).map_or(other.table, |t| t.header);
            return format!("unknown key `{key}` in {header}: it belongs in {there}");
        }
        format!("unknown key `{key}` in {header} (mailpushd.toml(5) lists every key)")
    }

    /// Checks one value against its key; reports and returns false if it cannot be used.
    fn value(&mut self, def: &Key, value: &mut Spanned<DeValue<'_>>) -> bool {
        let span = value.span();
        let key = def.name;
        let wrong =
            |v: &DeValue<'_>| format!("`{key}` must be {}, not {}", def.kind.expected(), a(v));
        let problem = match (def.kind, value.get_mut()) {
            (Kind::Str | Kind::Path, DeValue::String(_)) => None,
            (Kind::Bool, DeValue::Boolean(_)) => None,
            (Kind::Provider, DeValue::String(s)) => provider(s),
            (Kind::OneOf(values), DeValue::String(s)) => one_of(key, s, values),
            (Kind::Int | Kind::Secs | Kind::Millis, DeValue::Integer(i)) => {
                let n = i64::from_str_radix(i.as_str(), i.radix()).ok();
                match (n, def.range) {
                    (Some(n), Some((lo, hi))) if (lo..=hi).contains(&n) => None,
                    (Some(_), None) => None,
                    (_, range) => Some(out_of_range(key, def.kind, range)),
                }
            }
            (Kind::Int | Kind::Secs | Kind::Millis, DeValue::String(s))
                if s.trim().parse::<i64>().is_ok() =>
            {
                Some(format!(
                    "`{key}` must be {}, not a string: write {key} = {} (without quotes)",
                    def.kind.expected(),
                    s.trim()
                ))
            }
            (Kind::Argv, DeValue::Array(items)) => {
                match items.iter().find(|i| !i.get_ref().is_str()) {
                    None => None,
                    Some(item) => {
                        let message = format!(
                            "`{key}` must be {}; this item is {}",
                            def.kind.expected(),
                            a(item.get_ref())
                        );
                        self.report(item.span(), message);
                        return false;
                    }
                }
            }
            (Kind::Argv, DeValue::String(s)) => Some(argv_from_string(key, s)),
            (Kind::Mailboxes, DeValue::Array(items)) => {
                retain_items(items, |item| self.mailbox(item));
                None
            }
            (Kind::Mailboxes, DeValue::String(s)) => Some(format!(
                "`{key}` must be a list of mailbox names, not a string: write {key} = [{:?}]",
                s.as_ref()
            )),
            (_, other) => Some(wrong(other)),
        };
        match problem {
            None => true,
            Some(message) => {
                self.report(span, message);
                false
            }
        }
    }

    /// One item of `mailboxes`: a name, or a table of [`MAILBOX_KEYS`] with a `name`.
    fn mailbox(&mut self, item: &mut Spanned<DeValue<'_>>) -> bool {
        let span = item.span();
        let problem = match item.get_mut() {
            DeValue::String(_) => None,
            DeValue::Table(t) => {
                let mut ok = true;
                retain(t, |k, v| {
                    let problem = match MAILBOX_KEYS.iter().find(|(n, _)| *n == k.get_ref()) {
                        None => {
                            let near = keys::suggest(k.get_ref(), MAILBOX_KEYS.iter().map(|m| m.0));
                            let mut m = format!("unknown key `{}` in a mailbox", k.get_ref());
                            if let Some(near) = near {
                                m.push_str(&format!("; did you mean `{near}`?"));
                            } else {
                                m.push_str(" (a mailbox table has `name` and `notify`)");
                            }
                            Some((k.span(), m))
                        }
                        Some((name, Kind::Str)) if !v.get_ref().is_str() => Some((
                            v.span(),
                            format!(
                                "a mailbox's `{name}` must be a string, not {}",
                                a(v.get_ref())
                            ),
                        )),
                        Some((name, Kind::Bool)) if !v.get_ref().is_bool() => Some((
                            v.span(),
                            format!(
                                "a mailbox's `{name}` must be true or false, not {}",
                                a(v.get_ref())
                            ),
                        )),
                        Some(_) => None,
                    };
                    match problem {
                        None => true,
                        Some((span, message)) => {
                            // A wrong `name` leaves nothing to watch; a wrong `notify` only
                            // loses that setting.
                            ok &= k.get_ref() != "name";
                            self.report(span, message);
                            false
                        }
                    }
                });
                if !ok {
                    return false;
                }
                (!t.contains_key("name")).then(|| {
                    "a mailbox written as a table needs `name`: { name = \"Lists\", notify = false }"
                        .to_owned()
                })
            }
            other => Some(format!(
                "each mailbox must be a name or a table {{ name = ..., notify = ... }}, not {}",
                a(other)
            )),
        };
        match problem {
            None => true,
            Some(message) => {
                self.report(span, message);
                false
            }
        }
    }
}

/// Keeps the entries of `table` for which `keep` is true. (toml's own `retain` hands out the
/// keys without their spans, which every message needs.)
fn retain<'i>(
    table: &mut DeTable<'i>,
    mut keep: impl FnMut(&Spanned<DeString<'i>>, &mut Spanned<DeValue<'i>>) -> bool,
) {
    let mut gone = Vec::new();
    for (key, value) in table.iter_mut() {
        if !keep(key, value) {
            gone.push(key.get_ref().to_string());
        }
    }
    for key in gone {
        table.remove(key.as_str());
    }
}

/// Keeps the items of `array` for which `keep` is true.
fn retain_items<'i>(
    array: &mut DeArray<'i>,
    mut keep: impl FnMut(&mut Spanned<DeValue<'i>>) -> bool,
) {
    let items = std::mem::replace(array, DeArray::new());
    *array = items
        .into_iter()
        .filter_map(|mut item| keep(&mut item).then_some(item))
        .collect();
}

/// An unknown provider, with the nearest known one.
fn provider(name: &str) -> Option<String> {
    if providers::find(name).is_some() {
        return None;
    }
    let known: Vec<&str> = providers::names().collect();
    Some(match keys::suggest(name, known.iter().copied()) {
        Some(near) => format!(
            "unknown provider {name:?}; did you mean {near:?}? (known: {})",
            known.join(", ")
        ),
        None => format!("unknown provider {name:?}; known: {}", known.join(", ")),
    })
}

/// A value not among `values`, with the nearest of them.
fn one_of(key: &str, value: &str, values: &[&str]) -> Option<String> {
    if values.contains(&value) {
        return None;
    }
    let mut message = format!(
        "`{key}` must be {}, not {value:?}",
        keys::quoted_list(values)
    );
    let near = values
        .iter()
        .find(|v| v.eq_ignore_ascii_case(value))
        .copied()
        .or_else(|| keys::suggest(value, values.iter().copied()));
    if let Some(near) = near {
        message.push_str(&format!("; did you mean {near:?}?"));
    }
    Some(message)
}

/// An integer outside the key's range: "`port` must be between 1 and 65535".
fn out_of_range(key: &str, kind: Kind, range: Option<(i64, i64)>) -> String {
    let unit = kind.unit();
    match range {
        Some((lo, hi)) if hi >= i64::from(u32::MAX) => {
            format!("`{key}` must be {lo}{unit} or more")
        }
        Some((lo, hi)) => format!("`{key}` must be between {lo} and {hi}{unit}"),
        None => format!("`{key}` must be a whole number that fits in 64 bits"),
    }
}

/// A command written as one string: say it must be a list, and write the list when the
/// string splits into words the plain way (POSIX shell quoting, as a user would read it).
/// The list is only a suggestion: mailpushd never runs a command through a shell.
fn argv_from_string(key: &str, command: &str) -> String {
    let head = format!(
        "`{key}` must be a list of strings (a program and its arguments, run without a shell), \
         not a string"
    );
    match shlex::split(command) {
        Some(words) if !words.is_empty() => {
            let list: Vec<String> = words.iter().map(|w| format!("{w:?}")).collect();
            format!("{head}: write {key} = [{}]", list.join(", "))
        }
        _ => head,
    }
}

/// "a string", "an integer", "a table": what a TOML value is, for a message.
fn a(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}
