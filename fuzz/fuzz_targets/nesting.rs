//! The nesting guard in front of the IMAP parser (`mailpushd::imap::nesting`).
//!
//! Server bytes arrive in reads of any size, so the verdict must not depend on where they
//! are cut: the first byte picks a chunk size, and feeding the rest in chunks must end in
//! the same state (or the same refusal, at the same chunk or earlier) as feeding it whole.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailpushd::imap::nesting::Nesting;

fuzz_target!(|data: &[u8]| {
    let Some((&size, bytes)) = data.split_first() else {
        return;
    };
    let size = usize::from(size).max(1);
    let mut whole = Nesting::default();
    let whole_result = whole.feed(bytes);
    let mut chunked = Nesting::default();
    let mut chunked_result = Ok(());
    for chunk in bytes.chunks(size) {
        chunked_result = chunked.feed(chunk);
        if chunked_result.is_err() {
            break;
        }
    }
    assert_eq!(whole_result, chunked_result);
    if whole_result.is_ok() {
        assert_eq!(format!("{whole:?}"), format!("{chunked:?}"));
    }
});
