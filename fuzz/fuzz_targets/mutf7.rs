//! Modified UTF-7 mailbox names (`mailpushd::imap::mutf7`).
//!
//! The input, made UTF-8 lossily, is used twice: as a mailbox name as the user writes it
//! (`decode(encode(s)) == s`, and the wire form is printable ASCII), and as a name as a
//! server sends it (`decode` never panics; what it accepts re-encodes and decodes to the
//! same name; errors point at the offending byte; `decode_lossy` is `decode` or the input unchanged).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailpushd::imap::mutf7::{self, Mutf7Error};

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);

    let wire = mutf7::encode(&s);
    assert!(
        wire.bytes().all(|b| (0x20..=0x7e).contains(&b)),
        "wire form not printable ASCII: {wire:?}"
    );
    assert_eq!(mutf7::decode(&wire).as_deref(), Ok(&*s), "wire {wire:?}");

    match mutf7::decode(&s) {
        Ok(name) => {
            let again = mutf7::encode(&name);
            assert_eq!(mutf7::decode(&again).as_deref(), Ok(name.as_str()));
            assert_eq!(mutf7::decode_lossy(&s), name);
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
            // Every error points at what it names.
            match e {
                Mutf7Error::Unterminated(pos)
                | Mutf7Error::BadLength(pos)
                | Mutf7Error::UnpairedSurrogate(pos) => {
                    assert!(
                        s.get(pos..).is_some_and(|r| r.starts_with('&')),
                        "{e:?} in {s:?}"
                    )
                }
                Mutf7Error::InvalidBase64 { pos, ch } | Mutf7Error::Unencoded { pos, ch } => {
                    assert!(
                        s.get(pos..).is_some_and(|r| r.starts_with(ch)),
                        "{e:?} in {s:?}"
                    )
                }
            }
            assert_eq!(mutf7::decode_lossy(&s), *s);
        }
    }
});
