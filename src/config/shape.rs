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
    /// The key under which the top level's own keys (`accounts`) are kept.
    pub const ROOT: usize = usize::MAX;

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
        let span = e.span().unwrap_or(0..0);
        shape.broken.push(span.clone());
        shape.report(span, e.message().trim().to_owned());
    }
    shape.index_broken();
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
    /// Where the syntax errors are, by start. A value there is toml's stand-in for what
    /// could not be read: it is dropped without a second message.
    broken: Vec<Range<usize>>,
    /// `broken_end[i]`: the furthest end of `broken[..=i]`, so that whether a span touches
    /// any syntax error is one binary search, whatever the number of errors.
    broken_end: Vec<usize>,
}

impl Checker {
    fn report(&mut self, span: Range<usize>, message: String) {
        self.problems.push((span, message));
    }

    fn index_broken(&mut self) {
        self.broken.sort_by_key(|b| b.start);
        self.broken_end = self
            .broken
            .iter()
            .scan(0, |end, b| {
                *end = b.end.max(*end);
                Some(*end)
            })
            .collect();
    }

    /// Whether `span` touches a syntax error: one starts at or before its end, and the
    /// furthest end of those reaches its start.
    fn is_broken(&self, span: &Range<usize>) -> bool {
        let before = self.broken.partition_point(|b| b.start <= span.end);
        before > 0 && self.broken_end[before - 1] >= span.start
    }

    fn root(&mut self, root: &mut DeTable<'_>) {
        retain(root, |name, value| {
            let span = value.span();
            if self.is_broken(&name.span()) {
                return false;
            }
            let Some(table) = keys::table(name.get_ref()) else {
                // A key of a table, after a syntax error: most likely under a broken table
                // header, which was reported already.
                let after_broken = self
                    .broken
                    .first()
                    .is_some_and(|b| b.start <= name.span().start);
                if !after_broken || homes(name.get_ref()).is_empty() {
                    let message = self.unknown_table(name.get_ref());
                    self.report(name.span(), message);
                }
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
                            _ if self.is_broken(&span) => {
                                self.meant_root("accounts");
                                false
                            }
                            other => {
                                self.meant_root("accounts");
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
                ("accounts", _) if self.is_broken(&span) => {
                    self.meant_root("accounts");
                    false
                }
                ("accounts", other) => {
                    self.meant_root("accounts");
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
                (_, _) if self.is_broken(&span) => false,
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

    fn meant_root(&mut self, key: &'static str) {
        self.meant.0.entry(Meant::ROOT).or_default().insert(key);
    }

    /// An unknown top-level name: a misspelt table, or a key written above every table.
    fn unknown_table(&self, name: &str) -> String {
        let shown = shown(name);
        if let Some(t) = keys::suggest(name, TABLES.iter().map(|t| t.name)) {
            let header = keys::table(t).map_or(t, |t| t.header);
            return format!("unknown table {shown}; did you mean {header}?");
        }
        let homes = homes(name);
        if !homes.is_empty() {
            return format!(
                "{shown} must be inside a table: it is a key of {homes}, which must come \
                 before it"
            );
        }
        let known: Vec<&str> = TABLES.iter().map(|t| t.header).collect();
        format!("unknown table {shown}; the tables are {}", known.join(", "))
    }

    /// Checks every key of `table` (called `name`), which spans `span`.
    fn table(&mut self, name: &'static str, table: &mut DeTable<'_>, span: Range<usize>) {
        let header = keys::table(name).map_or(name, |t| t.header);
        let mut meant = BTreeSet::new();
        retain(table, |key, value| {
            let Some(def) = keys::find(name, key.get_ref()) else {
                if self.is_broken(&key.span()) {
                    return false;
                }
                let message = unknown_key(name, header, key.get_ref(), value.get_ref(), &mut meant);
                self.report(key.span(), message);
                return false;
            };
            if self.value(def, value, &mut meant) {
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

    /// Checks one value against its key; reports and returns false if it cannot be used.
    /// Keys whose value was only partly usable go into `meant`.
    fn value(
        &mut self,
        def: &Key,
        value: &mut Spanned<DeValue<'_>>,
        meant: &mut BTreeSet<&'static str>,
    ) -> bool {
        let span = value.span();
        if self.is_broken(&span) {
            return false;
        }
        let key = def.name;
        let problem = match (def.kind, value.get_mut()) {
            (Kind::Str | Kind::Path, DeValue::String(_)) => None,
            (Kind::Bool, DeValue::Boolean(_)) => None,
            (Kind::Provider, DeValue::String(s)) => provider(s),
            (Kind::OneOf(values), DeValue::String(s)) => one_of(key, s, values),
            (Kind::Int | Kind::Secs | Kind::Millis, DeValue::Integer(i)) => {
                match i64::from_str_radix(i.as_str(), i.radix()).ok() {
                    Some(n) if def.range.is_none_or(|(lo, hi)| (lo..=hi).contains(&n)) => None,
                    n => Some(out_of_range(key, def.kind, def.range, n)),
                }
            }
            (Kind::Int | Kind::Secs | Kind::Millis, DeValue::String(s)) => {
                Some(integer_from_string(def, s))
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
                        let span = item.span();
                        if !self.is_broken(&span) {
                            self.report(span, message);
                        }
                        return false;
                    }
                }
            }
            (Kind::Argv, DeValue::String(s)) => Some(argv_from_string(key, s)),
            (Kind::Mailboxes, DeValue::Array(items)) => {
                let before = items.len();
                retain_items(items, |item| self.mailbox(item));
                if items.len() != before {
                    meant.insert(def.name);
                }
                None
            }
            (Kind::Mailboxes, DeValue::String(s)) if s.chars().count() <= FIX_CHARS => {
                Some(format!(
                    "`{key}` must be a list of mailbox names, not a string: write {key} = [{}]",
                    toml_string(s)
                ))
            }
            (_, other) => Some(format!(
                "`{key}` must be {}, not {}",
                def.kind.expected(),
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

    /// One item of `mailboxes`: a name, or a table of [`MAILBOX_KEYS`] with a `name`.
    fn mailbox(&mut self, item: &mut Spanned<DeValue<'_>>) -> bool {
        let span = item.span();
        if self.is_broken(&span) {
            return false;
        }
        let problem = match item.get_mut() {
            DeValue::String(_) => None,
            DeValue::Table(t) => {
                let mut ok = true;
                retain(t, |k, v| {
                    if self.is_broken(&k.span()) || self.is_broken(&v.span()) {
                        ok &= k.get_ref() != "name";
                        return false;
                    }
                    let problem = match MAILBOX_KEYS.iter().find(|(n, _)| *n == k.get_ref()) {
                        None => {
                            let near = keys::suggest(k.get_ref(), MAILBOX_KEYS.iter().map(|m| m.0));
                            let mut m = format!("unknown key {} in a mailbox", shown(k.get_ref()));
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

/// An unknown key: the nearest key of this table (one its value fits, if two are as near),
/// a key of this table that ends in it (`timeout_secs` in [hooks] for `hook_timeout_secs`),
/// or the tables that do have it.
fn unknown_key(
    table: &str,
    header: &str,
    key: &str,
    value: &DeValue<'_>,
    meant: &mut BTreeSet<&'static str>,
) -> String {
    let here: Vec<&'static Key> = keys::KEYS.iter().filter(|k| k.table == table).collect();
    let shown = shown(key);
    let near = keys::nearest(key, here.iter().map(|k| k.name));
    let fitting = near
        .iter()
        .filter_map(|n| keys::find(table, n))
        .find(|k| fits(k.kind, value));
    let suffix = here
        .iter()
        .find(|k| k.name.ends_with(&format!("_{key}")))
        .copied();
    if let Some(def) = fitting
        .or_else(|| near.first().and_then(|n| keys::find(table, n)))
        .or(suffix)
    {
        meant.insert(def.name);
        return format!(
            "unknown key {shown} in {header}; did you mean `{}`?",
            def.name
        );
    }
    let homes = homes(key);
    if !homes.is_empty() {
        return format!("unknown key {shown} in {header} (it is a key of {homes})");
    }
    format!("unknown key {shown} in {header} (mailpushd.toml(5) lists every key)")
}

/// "[notifications] and [syslog]": the tables that have a key called `key`.
fn homes(key: &str) -> String {
    let headers: Vec<&str> = TABLES
        .iter()
        .filter(|t| keys::find(t.name, key).is_some())
        .map(|t| t.header)
        .collect();
    match headers.split_last() {
        None => String::new(),
        Some((last, [])) => (*last).to_owned(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}

/// Whether a value of this TOML type could be right for `kind`.
fn fits(kind: Kind, value: &DeValue<'_>) -> bool {
    match kind {
        Kind::Str | Kind::Path | Kind::Provider | Kind::OneOf(_) => value.is_str(),
        Kind::Bool => value.is_bool(),
        Kind::Int | Kind::Secs | Kind::Millis => value.is_integer(),
        Kind::Argv | Kind::Mailboxes => value.is_array(),
    }
}

/// Longest part of a name or value from the file that a message quotes, in characters.
const QUOTED_CHARS: usize = 100;
/// Longest suggested fix (`write key = [...]`), in characters; a longer one is not offered.
const FIX_CHARS: usize = 300;

/// A name from the file in a message: in backticks when it is plain, otherwise quoted as a
/// TOML string with everything unsafe escaped, so that it cannot break the message's one
/// line or the terminal it is printed on; at most [`QUOTED_CHARS`] of it.
fn shown(name: &str) -> String {
    let plain = !name.is_empty()
        && !name
            .chars()
            .any(|c| crate::decode::is_line_unsafe(c) || c == '`');
    if !plain {
        return quoted(name);
    }
    let head: String = name.chars().take(QUOTED_CHARS).collect();
    let cut = if name.chars().count() > QUOTED_CHARS {
        "..."
    } else {
        ""
    };
    format!("`{head}{cut}`")
}

/// A value from the file in a message: [`shown`]'s quoting, always as a string.
fn quoted(value: &str) -> String {
    let cut = value.chars().count() > QUOTED_CHARS;
    let head: String = value.chars().take(QUOTED_CHARS).collect();
    format!("{}{}", toml_string(&head), if cut { "..." } else { "" })
}

/// `s` as a TOML basic string (`"..."`, TOML 1.0 section "String"): `"` and `\` escaped, and
/// every unsafe character as `\uXXXX` (or `\t`, `\n`, `\r`), so that a suggested fix
/// reads back as exactly `s` and nothing in it needs escaping again.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if crate::decode::is_line_unsafe(c) => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
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
            "unknown provider {}; did you mean {near:?}? (known: {})",
            quoted(name),
            known.join(", ")
        ),
        None => format!(
            "unknown provider {}; known: {}",
            quoted(name),
            known.join(", ")
        ),
    })
}

/// A value not among `values`, with the nearest of them.
fn one_of(key: &str, value: &str, values: &[&str]) -> Option<String> {
    if values.contains(&value) {
        return None;
    }
    let mut message = format!(
        "`{key}` must be {}, not {}",
        keys::quoted_list(values),
        quoted(value)
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

/// The range of an integer key in words: "between 1 and 65535", "1 or more".
fn range_words(kind: Kind, range: Option<(i64, i64)>) -> String {
    let unit = kind.unit();
    match range {
        Some((lo, hi)) => format!("between {lo} and {hi}{unit}"),
        None => "a whole number that fits in 64 bits".to_owned(),
    }
}

/// An integer outside the key's range (`n`, or `None` when it does not fit in 64 bits):
/// "`port` must be between 1 and 65535"; for a count with no real upper bound, the side
/// it is on.
fn out_of_range(key: &str, kind: Kind, range: Option<(i64, i64)>, n: Option<i64>) -> String {
    let unit = kind.unit();
    match (range, n) {
        (Some((lo, hi)), Some(n)) if hi >= i64::from(u32::MAX) && n < lo => {
            format!("`{key}` must be {lo}{unit} or more")
        }
        (Some((_, hi)), _) if hi >= i64::from(u32::MAX) => {
            format!("`{key}` must be at most {hi}{unit}")
        }
        _ => format!("`{key}` must be {}", range_words(kind, range)),
    }
}

/// An integer written as a string: the fix (`write port = 993`) when the string holds an
/// integer the key accepts, otherwise what the key wants.
fn integer_from_string(def: &Key, s: &str) -> String {
    let key = def.name;
    match s.trim().parse::<i64>() {
        Ok(n) if def.range.is_none_or(|(lo, hi)| (lo..=hi).contains(&n)) => format!(
            "`{key}` must be {}, not a string: write {key} = {n} (without quotes)",
            def.kind.expected()
        ),
        _ => format!(
            "`{key}` must be {} {}, not a string",
            def.kind.expected(),
            range_words(def.kind, def.range)
        ),
    }
}

/// Characters that mean something to a shell. mailpushd runs commands without one, so a
/// string with any of them is not split into a suggested list: that would change what runs.
const SHELL_SYNTAX: &[char] = &[
    '|', '&', ';', '<', '>', '(', ')', '$', '`', '\\', '*', '?', '~', '{', '}', '[', ']', '#', '!',
    '\n',
];

/// A command written as one string: say it must be a list, and write the list when the
/// string splits into words the plain way (POSIX quoting, as a user would read it) and
/// holds no other shell syntax. The list is only a suggestion: mailpushd never runs a
/// command through a shell. For a secret's command, a single word is never shown: that is
/// what a password written there by mistake looks like, and it would be printed to the
/// terminal, the journal and syslog. (A passphrase of several words would be; the tests
/// and the closing note of issue 13 say so.)
fn argv_from_string(key: &str, command: &str) -> String {
    let head = format!(
        "`{key}` must be a list of strings (a program and its arguments, run without a shell), \
         not a string"
    );
    let generic = format!("{head}: write {key} = [\"program\", \"argument\", ...]");
    if command.contains(SHELL_SYNTAX) {
        return format!(
            "{head}; it is not run by a shell, so shell syntax (|, ;, $, quotes within \
             words...) means nothing here; list the program and its arguments instead, or use \
             [\"sh\", \"-c\", \"...\"] to run a shell on purpose"
        );
    }
    match shlex::split(command) {
        // A password pasted where its command belongs is one word: never shown.
        Some(words) if keys::SECRETS.contains(&key) && words.len() < 2 => generic,
        Some(words) if !words.is_empty() => {
            let list: Vec<String> = words.iter().map(|w| toml_string(w)).collect();
            let fix = format!("{key} = [{}]", list.join(", "));
            if fix.chars().count() > FIX_CHARS {
                generic
            } else {
                format!("{head}: write {fix}")
            }
        }
        _ => generic,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_span_touches_a_syntax_error_exactly_when_it_overlaps_one() {
        // Out of order, one inside another, and an empty one, as toml may report them.
        let mut c = Checker {
            broken: vec![40..41, 10..30, 12..14, 60..60],
            ..Checker::default()
        };
        c.index_broken();
        let touches = |r: Range<usize>| c.is_broken(&r);
        assert!(touches(0..10), "ends where one starts");
        assert!(
            touches(20..22),
            "inside the long one, past the short one inside it"
        );
        assert!(touches(29..35));
        assert!(!touches(31..39), "between two");
        assert!(touches(41..50), "starts where one ends");
        assert!(!touches(42..59));
        assert!(touches(60..60) && touches(55..61) && touches(60..70));
        assert!(!touches(61..100));
        let none = Checker::default();
        assert!(!none.is_broken(&(0..100)));
    }
}
