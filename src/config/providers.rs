//! Provider presets: `provider = "gmail"` in an account fills in host, port, TLS mode and the
//! provider's quirks, so users need not look them up. Any key the account sets explicitly wins
//! over the preset (config validation applies that rule; this module is only the table).
//!
//! Every fact here comes from the provider's own public documentation, named in
//! [`Preset::source`]; the few that could only be confirmed from client issue trackers (the
//! NetEase quirks) cite those threads. Where no official number exists, as for IDLE timeouts,
//! the preset leaves the field `None` rather than guessing. The per-account connection caps
//! behind [`Preset::max_connections`] are from shared/FIELD.md ("Connection limits").
//! docs/PROVIDERS.md is the user-facing version of this table, with what could and could
//! not be verified.

use super::types::TlsMode;

/// Poll interval for providers whose servers do not offer IDLE. This is mailpushd's own
/// choice (the same as the general `poll_interval_secs` default), not a number published by
/// any provider: none of them documents a polling rate limit that we could find.
pub const NO_IDLE_POLL_INTERVAL_SECS: u64 = 120;

/// Connections Thunderbird holds per IMAP account by default: its per-server
/// `max_cached_connections`, which `nsImapIncomingServer::GetMaximumConnectionsNumber`
/// (comm-central, mailnews/imap/src/nsImapIncomingServer.cpp) takes as 5 when it is unset
/// or 0; mailnews.js sets no `mail.server.default` value for it. A preset's
/// [`Preset::max_connections`] leaves at least this many of the provider's cap free, so the
/// user's mail client still gets its connections.
pub const MAIL_CLIENT_CONNECTIONS: u32 = 5;

/// What `provider = "<name>"` means for one account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preset {
    /// The value of `provider` in the config file, lowercase (`find` ignores case).
    pub name: &'static str,
    pub host: &'static str,
    pub port: u16,
    pub tls: TlsMode,
    /// IDLE re-issue interval when the provider drops IDLE sooner than 29 min (None: keep the
    /// default 1500 s).
    pub idle_refresh_secs: Option<u64>,
    /// Set where the server has no IDLE (we poll instead; the daemon detects this from
    /// CAPABILITY anyway, so this is documentation + a poll_interval default).
    pub poll_interval_secs: Option<u64>,
    /// The account's connection budget (`max_connections`) when the user sets none; None:
    /// the general default, 5. Set only where the provider's per-account cap is known
    /// (shared/FIELD.md, "Connection limits"), at most that cap less
    /// [`MAIL_CLIENT_CONNECTIONS`]: Gmail allows 15 simultaneous IMAP connections per
    /// account, shared by every client, so 10; Outlook / Office 365 about 20, on-premises
    /// Exchange 16 by default, so 8 stays clear of both. Fastmail and the others publish no
    /// cap that we know of.
    pub max_connections: Option<u32>,
    /// ID (RFC 2971) needed before SELECT (NetEase). The daemon sends ID whenever the server
    /// advertises it; this flag is documentation.
    pub needs_id: bool,
    /// What users must know: app passwords, enabling IMAP in web settings, OAuth2-only,
    /// authorization code instead of password, etc.
    pub notes: &'static str,
    /// Where the facts come from (public documentation URLs, separated by spaces).
    pub source: &'static str,
}

/// NetEase's three consumer domains share one server software and one help centre.
const NETEASE_NOTES: &str = "Turn on the IMAP/SMTP service in the web mailbox settings and log \
     in with the client authorization code (授权码) NetEase gives you there, not the web \
     password. The server rejects SELECT with \"Unsafe Login\" unless the client first \
     identifies itself with the IMAP ID command; mailpushd sends ID automatically. The server \
     does not advertise IDLE, so mailpushd polls.";

const NETEASE_SOURCES: &str = concat!(
    "https://help.mail.163.com/faqDetail.do?code=d7a5dc8471cd0c0e8b4b8f4f8e49998b374173cfe9171305fa1ce630d7f67ac2eda07326646e6eb0",
    " https://github.com/chatmail/provider-db/issues/179",
    " https://github.com/pimalaya/himalaya/issues/651",
    " https://github.com/roundcube/roundcubemail/issues/9414",
    " https://github.com/smiley22/S22.Imap/issues/167",
);

/// All presets, in the order docs/PROVIDERS.md lists them.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "gmail",
        host: "imap.gmail.com",
        port: 993,
        tls: TlsMode::Implicit,
        // Google documents no IDLE timeout (only a ~24 h session limit), so keep the default.
        idle_refresh_secs: None,
        poll_interval_secs: None,
        // Gmail's cap is 15 per account; 15 - 5 for the mail client.
        max_connections: Some(10),
        needs_id: false,
        notes: "Log in with OAuth2 (`oauth2_token_command`, XOAUTH2) or a Google app password: \
             it needs 2-Step Verification, and Google does not offer app passwords for \
             accounts with only security keys, with Advanced Protection, or (often) for \
             work and school accounts. Check that IMAP is enabled in Gmail's settings \
             (Forwarding and POP/IMAP). Gmail ends IMAP sessions after about 24 hours; \
             mailpushd reconnects. Google publishes no IDLE timeout, so the default \
             re-issue interval is kept.",
        source: concat!(
            "https://developers.google.com/gmail/imap/imap-smtp",
            " https://support.google.com/mail/answer/7126229",
            " https://support.google.com/accounts/answer/185833",
            " https://knowledge.workspace.google.com/kb/how-to-generate-an-app-passwords-000009237",
        ),
    },
    Preset {
        name: "outlook",
        host: "outlook.office365.com",
        port: 993,
        tls: TlsMode::Implicit,
        // No official IDLE timeout for Outlook.com or Exchange Online found; keep the default.
        idle_refresh_secs: None,
        poll_interval_secs: None,
        // About 20 (Exchange Online), 16 on-premises; 8 leaves room under either.
        max_connections: Some(8),
        needs_id: false,
        notes: "Outlook.com, Hotmail and Microsoft 365 accept only OAuth2 (Modern Auth) for \
             IMAP: Microsoft lists OAuth2 as the only sign-in method for Outlook.com, and has \
             disabled Basic authentication (password or app password) in every Microsoft 365 \
             tenant for good. Use `oauth2_token_command` with a token tool (oama, \
             mutt_oauth2.py) registered for Microsoft; mailpushd logs in with XOAUTH2. IMAP \
             must also be allowed (Outlook.com: Settings, Mail, Forwarding and IMAP).",
        source: concat!(
            "https://support.microsoft.com/en-us/office/pop-imap-and-smtp-settings-8361e398-8af4-4e97-b147-6c6c4ac95353",
            " https://learn.microsoft.com/en-us/exchange/clients-and-mobile-in-exchange-online/deprecation-of-basic-authentication-exchange-online",
        ),
    },
    Preset {
        name: "icloud",
        host: "imap.mail.me.com",
        port: 993,
        tls: TlsMode::Implicit,
        idle_refresh_secs: None,
        poll_interval_secs: None,
        max_connections: None,
        needs_id: false,
        notes: "Log in with an app-specific password (create one in your Apple Account's \
             Sign-In and Security settings; it needs two-factor authentication), not the \
             Apple Account password. Apple says the user name is usually the part of the \
             address before the @; if that fails, use the full address.",
        source: "https://support.apple.com/en-us/102525",
    },
    Preset {
        name: "yahoo",
        host: "imap.mail.yahoo.com",
        port: 993,
        tls: TlsMode::Implicit,
        idle_refresh_secs: None,
        poll_interval_secs: None,
        max_connections: None,
        needs_id: false,
        notes: "Yahoo requires an app password for mail apps that take a single password: \
             generate one on the Yahoo Account Security page (Create app password) and use \
             it instead of your Yahoo password.",
        source: concat!(
            "https://help.yahoo.com/kb/SLN4075.html",
            " https://help.yahoo.com/kb/generate-manage-rd-party-passwords-sln15241.html",
        ),
    },
    Preset {
        name: "fastmail",
        host: "imap.fastmail.com",
        port: 993,
        tls: TlsMode::Implicit,
        idle_refresh_secs: None,
        poll_interval_secs: None,
        max_connections: None,
        needs_id: false,
        notes: "Create an app password (Settings, Privacy & Security) and use it: the regular \
             Fastmail password does not work over IMAP. Fastmail supports implicit TLS only, \
             not STARTTLS.",
        source: concat!(
            "https://www.fastmail.com/help/technical/servernamesandports.html",
            " https://fastmail.help/hc/en-us/articles/1500000279921",
        ),
    },
    Preset {
        name: "qq",
        host: "imap.qq.com",
        port: 993,
        tls: TlsMode::Implicit,
        idle_refresh_secs: None,
        poll_interval_secs: None,
        max_connections: None,
        needs_id: false,
        notes: "Turn on the IMAP/SMTP service in QQ Mail's web settings (Settings, Account) and \
             log in with the authorization code (授权码) it generates, not the QQ password: \
             QQ Mail accepts only authorization codes from mail clients.",
        source: "https://service.mail.qq.com/detail/0/75",
    },
    Preset {
        name: "163",
        host: "imap.163.com",
        port: 993,
        tls: TlsMode::Implicit,
        idle_refresh_secs: None,
        poll_interval_secs: Some(NO_IDLE_POLL_INTERVAL_SECS),
        max_connections: None,
        needs_id: true,
        notes: NETEASE_NOTES,
        source: NETEASE_SOURCES,
    },
    Preset {
        name: "126",
        host: "imap.126.com",
        port: 993,
        tls: TlsMode::Implicit,
        idle_refresh_secs: None,
        poll_interval_secs: Some(NO_IDLE_POLL_INTERVAL_SECS),
        max_connections: None,
        needs_id: true,
        notes: NETEASE_NOTES,
        source: concat!(
            "https://help.mail.163.com/faqDetail.do?code=d7a5dc8471cd0c0e8b4b8f4f8e49998b374173cfe9171305fa1ce630d7f67ac2eda07326646e6eb0",
            " https://github.com/roundcube/roundcubemail/issues/9414",
            " https://github.com/weibaohui/imapdownloader/issues/4",
        ),
    },
    Preset {
        name: "yeah",
        host: "imap.yeah.net",
        port: 993,
        tls: TlsMode::Implicit,
        idle_refresh_secs: None,
        poll_interval_secs: Some(NO_IDLE_POLL_INTERVAL_SECS),
        max_connections: None,
        needs_id: true,
        notes: NETEASE_NOTES,
        source: concat!(
            "https://help.mail.163.com/faqDetail.do?code=d7a5dc8471cd0c0e8b4b8f4f8e49998b374173cfe9171305fa1ce630d7f67ac2eda07326646e6eb0",
            " https://github.com/pimalaya/himalaya/issues/651",
        ),
    },
    Preset {
        name: "aliyun",
        // Alibaba's documentation names this server (Alibaba Mail, the business service). We
        // found no Alibaba page for personal @aliyun.com mailboxes; see the notes.
        host: "imap.qiye.aliyun.com",
        port: 993,
        tls: TlsMode::Implicit,
        idle_refresh_secs: None,
        poll_interval_secs: None,
        max_connections: None,
        needs_id: false,
        notes: "This is Alibaba Mail (阿里邮箱, the business mail service) as Alibaba \
             documents it; the server supports IDLE. Enable IMAP access for the mailbox; if \
             the third-party client security password is turned on, log in with that \
             password instead of the mailbox password. Personal @aliyun.com mailboxes: \
             Alibaba's documentation that we could find does not name their server, so set \
             host yourself (third-party guides give imap.aliyun.com; unverified).",
        source: concat!(
            "https://help.aliyun.com/document_detail/2857156.html",
            " https://help.aliyun.com/en/document_detail/2857286.html",
            " https://help.aliyun.com/en/document_detail/36687.html",
        ),
    },
];

/// The preset called `name`, ignoring ASCII case (`"Gmail"` finds `"gmail"`).
pub fn find(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name.eq_ignore_ascii_case(name))
}

/// Every preset name, in table order (for "unknown provider" messages and docs).
pub fn names() -> impl Iterator<Item = &'static str> {
    PRESETS.iter().map(|p| p.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The domain each provider's IMAP host must belong to.
    const DOMAINS: &[(&str, &str)] = &[
        ("gmail", "gmail.com"),
        ("outlook", "office365.com"),
        ("icloud", "me.com"),
        ("yahoo", "yahoo.com"),
        ("fastmail", "fastmail.com"),
        ("qq", "qq.com"),
        ("163", "163.com"),
        ("126", "126.com"),
        ("yeah", "yeah.net"),
        ("aliyun", "aliyun.com"),
    ];

    #[test]
    fn every_host_is_in_its_providers_domain() {
        assert_eq!(PRESETS.len(), DOMAINS.len());
        for p in PRESETS {
            let (_, domain) = DOMAINS
                .iter()
                .find(|(name, _)| *name == p.name)
                .unwrap_or_else(|| panic!("no expected domain for preset {:?}", p.name));
            assert!(
                p.host.ends_with(&format!(".{domain}")),
                "{}: host {} is not under {domain}",
                p.name,
                p.host
            );
        }
    }

    #[test]
    fn every_preset_uses_implicit_tls_on_993() {
        // Every provider's documentation gives 993 with SSL/TLS from the first byte.
        for p in PRESETS {
            assert_eq!((p.port, p.tls), (993, TlsMode::Implicit), "{}", p.name);
        }
    }

    #[test]
    fn names_are_unique_lowercase_and_all_listed() {
        let names: Vec<_> = names().collect();
        assert_eq!(
            names,
            [
                "gmail", "outlook", "icloud", "yahoo", "fastmail", "qq", "163", "126", "yeah",
                "aliyun"
            ]
        );
        for (i, n) in names.iter().enumerate() {
            assert_eq!(*n, n.to_ascii_lowercase());
            assert!(!names[i + 1..].contains(n), "{n} listed twice");
        }
    }

    #[test]
    fn find_ignores_case_and_rejects_unknown_names() {
        assert_eq!(find("gmail").map(|p| p.host), Some("imap.gmail.com"));
        assert_eq!(find("GMail").map(|p| p.name), Some("gmail"));
        assert_eq!(find("YEAH").map(|p| p.host), Some("imap.yeah.net"));
        assert_eq!(find("iCloud").map(|p| p.name), Some("icloud"));
        assert!(find("163").is_some());
        assert!(find("hotmail").is_none());
        assert!(find("").is_none());
        assert!(find(" gmail").is_none());
    }

    #[test]
    fn quirks_stay_within_what_the_config_accepts() {
        for p in PRESETS {
            if let Some(s) = p.idle_refresh_secs {
                // config.rs: 10..=29 min (RFC 2177).
                assert!((10..=29 * 60).contains(&s), "{}: idle_refresh {s}", p.name);
            }
            if let Some(s) = p.poll_interval_secs {
                assert!((1..=86_400).contains(&s), "{}: poll_interval {s}", p.name);
            }
        }
    }

    /// Each provider's per-account connection cap, where one is known (shared/FIELD.md,
    /// "Connection limits"): Gmail 15; Outlook about 20 in Exchange Online, and 16 by
    /// default on on-premises Exchange, which counts here as the lower.
    const CONNECTION_CAPS: &[(&str, u32)] = &[("gmail", 15), ("outlook", 16)];

    #[test]
    fn every_budget_leaves_room_under_the_providers_cap() {
        let (lo, hi) = crate::config::keys::find("accounts", "max_connections")
            .and_then(|k| k.range)
            .expect("max_connections has a range");
        for p in PRESETS {
            let budget = p.max_connections;
            if let Some(n) = budget {
                assert!(
                    (lo..=hi).contains(&i64::from(n)),
                    "{}: max_connections {n}",
                    p.name
                );
            }
            let Some(&(_, cap)) = CONNECTION_CAPS.iter().find(|(name, _)| *name == p.name) else {
                continue;
            };
            let budget = budget.unwrap_or(crate::config::DEFAULT_MAX_CONNECTIONS);
            assert!(
                budget < cap,
                "{}: {budget} is not below the cap {cap}",
                p.name
            );
            assert!(
                budget + MAIL_CLIENT_CONNECTIONS <= cap,
                "{}: {budget} leaves less than {MAIL_CLIENT_CONNECTIONS} of {cap} for the \
                 mail client",
                p.name
            );
        }
        assert_eq!(find("gmail").and_then(|p| p.max_connections), Some(10));
        assert_eq!(find("outlook").and_then(|p| p.max_connections), Some(8));
        assert_eq!(find("fastmail").and_then(|p| p.max_connections), None);
    }

    #[test]
    fn only_netease_needs_id_and_polls() {
        for p in PRESETS {
            let netease = matches!(p.name, "163" | "126" | "yeah");
            assert_eq!(p.needs_id, netease, "{}", p.name);
            assert_eq!(p.poll_interval_secs.is_some(), netease, "{}", p.name);
        }
    }

    #[test]
    fn every_preset_has_notes_and_https_sources() {
        for p in PRESETS {
            assert!(!p.notes.trim().is_empty(), "{}", p.name);
            let urls: Vec<_> = p.source.split(' ').collect();
            assert!(!urls.is_empty(), "{}", p.name);
            for u in urls {
                assert!(
                    u.starts_with("https://") && u.len() > "https://".len(),
                    "{}: bad source {u:?}",
                    p.name
                );
            }
        }
    }
}
