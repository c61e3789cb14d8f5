//! Mailbox patterns in `mailboxes`: `"Lists/*"`, `"%"`, `"*"` (IMAP LIST wildcards, RFC
//! 3501 section 6.3.8), expanded by the server's LIST into the mailboxes to watch. Pure:
//! which names a pattern stands for is the server's answer; what is kept of it is decided
//! here.
//!
//! A pattern never brings in what a user would not want announced: mailboxes that cannot
//! be selected (`\Noselect`, `\NonExistent`), and the special-use sets of RFC 6154 that
//! hold mail the user sent, threw away, or sees twice: `\All` (Gmail's "All Mail"),
//! `\Flagged`, `\Junk`, `\Trash`, `\Sent`, `\Drafts`. A mailbox named outright is always
//! watched.

/// Special uses (RFC 6154 section 2) a pattern leaves out.
pub const EXCLUDED_SPECIAL_USES: [&str; 6] = [
    "\\All",
    "\\Flagged",
    "\\Junk",
    "\\Trash",
    "\\Sent",
    "\\Drafts",
];

/// Whether a `mailboxes` entry is a pattern: it holds `*` (any characters) or `%` (any
/// but the hierarchy separator).
pub fn is_pattern(name: &str) -> bool {
    name.contains(['*', '%'])
}

/// One mailbox of a LIST answer, reduced to what decides whether a pattern keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// As the user would write it (UTF-8, decoded from modified UTF-7).
    pub name: String,
    /// Neither `\\Noselect` nor `\\NonExistent` (RFC 3501 section 7.2.2, RFC 5258).
    pub selectable: bool,
    /// Its special use (RFC 6154), if the server gave one (`"\\Sent"`...).
    pub special_use: Option<String>,
    /// The hierarchy separator LIST gave with it (`None`: a flat name).
    pub separator: Option<char>,
}

/// What one LIST answered, as mailpushd keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    pub listed: Vec<Listed>,
    /// Names left out because they cannot be named back to the server the same way
    /// (modified UTF-7 that does not decode) or would break a log line (a line break or
    /// NUL), as the server sent them, escaped: for the log.
    pub dropped: Vec<String>,
}

/// The mailboxes of `listed` that `pattern` matches (with each one's own separator): a
/// server's LIST may answer more than was asked, and what was not asked for is not
/// watched.
pub fn matching(pattern: &str, listed: Vec<Listed>) -> Vec<Listed> {
    listed
        .into_iter()
        .filter(|l| {
            matches(pattern, &l.name, l.separator)
                || (pattern.eq_ignore_ascii_case("INBOX") && l.name.eq_ignore_ascii_case("INBOX"))
                || (l.name.eq_ignore_ascii_case("INBOX") && matches(pattern, "INBOX", l.separator))
        })
        .collect()
}

/// The mailboxes to watch: the names in `configured` that are not patterns, in their
/// order, then what the server LISTed for the patterns (`listed`), in name order (a server
/// may list in any order, and a new order is no change), without the excluded special uses
/// and unselectable ones, each once (INBOX in any case is INBOX).
pub fn expand(configured: &[String], listed: &[Listed]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let push = |name: &str, out: &mut Vec<String>| {
        let same = |m: &String| {
            m == name || (m.eq_ignore_ascii_case("INBOX") && name.eq_ignore_ascii_case("INBOX"))
        };
        if !out.iter().any(same) {
            out.push(name.to_owned());
        }
    };
    for name in configured.iter().filter(|n| !is_pattern(n)) {
        push(name, &mut out);
    }
    let mut matched: Vec<&Listed> = listed
        .iter()
        .filter(|l| {
            let excluded = l.special_use.as_deref().is_some_and(|u| {
                EXCLUDED_SPECIAL_USES
                    .iter()
                    .any(|x| x.eq_ignore_ascii_case(u))
            });
            l.selectable && !excluded
        })
        .collect();
    matched.sort_by(|a, b| a.name.cmp(&b.name));
    for l in matched {
        push(&l.name, &mut out);
    }
    out
}

/// Whether `name` matches `pattern` as LIST matches it (RFC 3501 section 6.3.8): `*`
/// matches any characters, `%` any but the hierarchy separator `separator`. Used only for
/// per-mailbox settings given to a pattern (`{ name = "Lists/*", notify = false }`); which
/// mailboxes exist is the server's answer.
pub fn matches(pattern: &str, name: &str, separator: Option<char>) -> bool {
    let n: Vec<char> = name.chars().collect();
    // reach[j]: the pattern so far can match the first j characters of the name. One
    // pass per pattern character: O(pattern x name), whatever the wildcards.
    let mut reach = vec![false; n.len() + 1];
    reach[0] = true;
    for c in pattern.chars() {
        let mut next = vec![false; n.len() + 1];
        match c {
            '*' | '%' => {
                let mut open = false;
                for j in 0..=n.len() {
                    if reach[j] {
                        open = true;
                    } else if c == '%' && j > 0 && Some(n[j - 1]) == separator {
                        open = false;
                    }
                    next[j] = open;
                    // `%` cannot carry a match across the separator.
                    if c == '%' && j < n.len() && Some(n[j]) == separator && !reach[j + 1] {
                        open = false;
                    }
                }
            }
            c => {
                for j in 0..n.len() {
                    next[j + 1] = reach[j] && n[j] == c;
                }
            }
        }
        reach = next;
    }
    reach[n.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(name: &str, special: Option<&str>) -> Listed {
        Listed {
            name: name.to_owned(),
            selectable: true,
            special_use: special.map(str::to_owned),
            separator: Some('/'),
        }
    }

    #[test]
    fn what_the_pattern_does_not_match_is_left_out() {
        let got = matching(
            "Lists/*",
            vec![
                listed("Lists/a", None),
                listed("Private", None),
                listed("Archive/2019", None),
            ],
        );
        assert_eq!(got, vec![listed("Lists/a", None)]);
        // INBOX in any case matches a pattern that matches INBOX.
        assert_eq!(matching("*", vec![listed("Inbox", None)]).len(), 1);
        assert_eq!(matching("IN%", vec![listed("INBOX", None)]).len(), 1);
    }

    #[test]
    fn a_new_order_is_the_same_expansion() {
        let a = expand(
            &names(&["*"]),
            &[listed("B", None), listed("A", None), listed("INBOX", None)],
        );
        let b = expand(
            &names(&["*"]),
            &[listed("INBOX", None), listed("A", None), listed("B", None)],
        );
        assert_eq!(a, b);
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn patterns_are_told_from_names() {
        assert!(is_pattern("Lists/*"));
        assert!(is_pattern("%"));
        assert!(!is_pattern("INBOX"));
        assert!(!is_pattern("工作"));
    }

    #[test]
    fn named_mailboxes_come_first_then_matches_without_special_uses() {
        let got = expand(
            &names(&["INBOX", "*", "Archive"]),
            &[
                listed("INBOX", None),
                listed("Lists", None),
                listed("Sent", Some("\\Sent")),
                listed("Trash", Some("\\trash")),
                listed("[Gmail]/All Mail", Some("\\All")),
                listed("Junk", Some("\\Junk")),
                listed("Drafts", Some("\\Drafts")),
                listed("Starred", Some("\\Flagged")),
                listed("Archive", Some("\\Archive")),
                Listed {
                    selectable: false,
                    ..listed("[Gmail]", None)
                },
                listed("工作", None),
            ],
        );
        assert_eq!(got, names(&["INBOX", "Archive", "Lists", "工作"]));
        // Matches come in name order, after the named ones.
        let got = expand(
            &names(&["Work", "*"]),
            &[listed("b", None), listed("a", None)],
        );
        assert_eq!(got, names(&["Work", "a", "b"]));
    }

    #[test]
    fn a_special_use_named_outright_is_watched() {
        let got = expand(&names(&["Sent", "*"]), &[listed("Sent", Some("\\Sent"))]);
        assert_eq!(got, names(&["Sent"]));
    }

    #[test]
    fn inbox_in_any_case_is_one_mailbox() {
        let got = expand(&names(&["Inbox", "*"]), &[listed("INBOX", None)]);
        assert_eq!(got, names(&["Inbox"]));
    }

    #[test]
    fn wildcards_match_as_list_does() {
        assert!(matches("Lists/*", "Lists/rust/announce", Some('/')));
        assert!(matches("Lists/%", "Lists/rust", Some('/')));
        assert!(!matches("Lists/%", "Lists/rust/announce", Some('/')));
        assert!(matches("*", "anything", Some('/')));
        assert!(!matches("Lists/*", "Work", Some('/')));
        assert!(matches("a%c", "abbc", None));
        assert!(matches("%/b", "a/b", Some('/')));
        assert!(!matches("%", "a/b", Some('/')));
        assert!(matches("%", "", Some('/')));
        assert!(matches("a*", "a/b/c", Some('/')));
        // Many wildcards cannot make it slow.
        let p = "a%".repeat(2_000) + "x";
        assert!(!matches(&p, &"a".repeat(500), Some('/')));
    }
}
