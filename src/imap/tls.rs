//! The TLS client contexts: one `native_tls::TlsConnector` per trust setting (verify or
//! not, which extra `ca_file` certificate), shared by every connection that uses it.
//!
//! Why shared: building a connector makes OpenSSL parse the whole system CA bundle into a
//! fresh certificate store (twice: once for OpenSSL's default paths, once for the paths
//! native-tls probes), and every connection keeps its connector's store alive. Measured
//! with heaptrack, that was 1.2 MiB of heap per connection and ~90 % of the daemon's heap
//! with 10 TLS accounts (docs/PERFORMANCE.md). A connector is a reference-counted
//! `SSL_CTX`, safe to use from many threads, so one per trust setting is enough.
//!
//! The cache is emptied on every config reload, so a changed system store (a
//! ca-certificates update) is picked up by the connections made after a reload or a
//! reconnect that follows one, without a restart.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError};

/// What makes two connectors differ. The `ca_file` is keyed by its contents, not its
/// path, so a certificate replaced on disk is used at the next connect.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Trust {
    /// False only for the documented `tls_verify = false` escape hatch.
    pub verify: bool,
    /// PEM text of the account's `ca_file`, added to the system roots.
    pub extra_root_pem: Option<Vec<u8>>,
}

/// More distinct trust settings than any sane config has; past this the cache starts
/// over, so a `ca_file` rewritten in a loop cannot grow it without bound.
const MAX_CONTEXTS: usize = 64;

fn cache() -> &'static Mutex<HashMap<Trust, native_tls::TlsConnector>> {
    static CACHE: OnceLock<Mutex<HashMap<Trust, native_tls::TlsConnector>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The shared connector for `trust`, built on first use. Building happens under the lock
/// on purpose: 100 watchers starting together then parse the CA bundle once, not 100
/// times (which also made start-up CPU-bound).
pub fn connector(trust: &Trust) -> Result<native_tls::TlsConnector, native_tls::Error> {
    let mut cache = cache().lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(c) = cache.get(trust) {
        return Ok(c.clone());
    }
    let built = build(trust)?;
    if cache.len() >= MAX_CONTEXTS {
        cache.clear();
    }
    cache.insert(trust.clone(), built.clone());
    Ok(built)
}

/// Drops every cached connector; connections already made keep theirs.
pub fn forget() {
    cache()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clear();
}

/// How many connectors are cached.
#[cfg(test)]
fn cached() -> usize {
    cache().lock().unwrap_or_else(PoisonError::into_inner).len()
}

fn build(trust: &Trust) -> Result<native_tls::TlsConnector, native_tls::Error> {
    let mut builder = native_tls::TlsConnector::builder();
    builder.min_protocol_version(Some(native_tls::Protocol::Tlsv12));
    if !trust.verify {
        builder.danger_accept_invalid_certs(true);
        builder.danger_accept_invalid_hostnames(true);
    }
    if let Some(pem) = &trust.extra_root_pem {
        builder.add_root_certificate(native_tls::Certificate::from_pem(pem)?);
    }
    builder.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test only: the cache is process-wide, and parallel tests would race on its size.
    #[test]
    fn one_connector_per_trust_setting_and_forget_empties_the_cache() {
        let verify = Trust {
            verify: true,
            extra_root_pem: None,
        };
        let lax = Trust {
            verify: false,
            extra_root_pem: None,
        };
        forget();
        connector(&verify).unwrap();
        connector(&verify).unwrap();
        assert_eq!(cached(), 1);
        connector(&lax).unwrap();
        assert_eq!(cached(), 2);
        let garbage = Trust {
            verify: true,
            extra_root_pem: Some(b"not a certificate".to_vec()),
        };
        assert!(connector(&garbage).is_err(), "a bad ca_file is an error");
        assert_eq!(cached(), 2, "failures are not cached");
        forget();
        assert_eq!(cached(), 0);
    }
}
