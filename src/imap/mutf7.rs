//! IMAP modified UTF-7 (RFC 3501 §5.1.3) for mailbox names.
//!
//! Owns the conversion between mailbox names as users write them in the
//! config (UTF-8, e.g. `其他文件夹/工作`) and as they travel on the wire
//! (`&UXZO1mWHTvZZOQ-/&XeVPXA-`), in both directions. Pure functions; the
//! modified base64 is hand-written because it differs from standard base64
//! (`,` for `/`, no padding) and is only a few lines.

/// The modified base64 alphabet: standard base64 with `,` in place of `/`.
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

/// Why a wire name is not valid modified UTF-7. Byte offsets are into the
/// wire name, pointing at the offending `&` run or character.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mutf7Error {
    /// An `&` with no closing `-`.
    #[error("unterminated `&` sequence at byte {0}")]
    Unterminated(usize),
    /// A character outside the modified base64 alphabet inside an `&` run.
    #[error("invalid modified base64 character {ch:?} at byte {pos}")]
    InvalidBase64 {
        /// Byte offset of the character.
        pos: usize,
        /// The character.
        ch: char,
    },
    /// The run does not decode to whole UTF-16 code units, or its unused
    /// trailing bits are not zero.
    #[error("`&` sequence at byte {0} has an invalid length")]
    BadLength(usize),
    /// The run decodes to UTF-16 with an unpaired surrogate.
    #[error("`&` sequence at byte {0} contains an unpaired UTF-16 surrogate")]
    UnpairedSurrogate(usize),
    /// A character outside printable ASCII appears unencoded.
    #[error("character {ch:?} at byte {pos} must be encoded")]
    Unencoded {
        /// Byte offset of the character.
        pos: usize,
        /// The character.
        ch: char,
    },
}

/// Encodes a UTF-8 mailbox name for the wire.
///
/// Printable ASCII (0x20–0x7e) stands for itself, except `&`, which becomes
/// `&-`. Every maximal run of other characters becomes `&`, the modified
/// base64 of its UTF-16BE form, and `-`.
pub fn encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut run: Vec<u16> = Vec::new();
    for c in name.chars() {
        if is_direct(c) {
            flush_run(&mut run, &mut out);
            if c == '&' {
                out.push_str("&-");
            } else {
                out.push(c);
            }
        } else {
            let mut units = [0u16; 2];
            run.extend_from_slice(c.encode_utf16(&mut units));
        }
    }
    flush_run(&mut run, &mut out);
    out
}

/// Decodes a wire mailbox name to UTF-8, rejecting malformed input.
///
/// Non-canonical but unambiguous forms (printable ASCII inside an `&` run,
/// two runs back to back) are accepted: the result is for display and
/// matching, and the strict form adds nothing there.
pub fn decode(wire: &str) -> Result<String, Mutf7Error> {
    let mut out = String::with_capacity(wire.len());
    let mut chars = wire.char_indices();
    while let Some((pos, c)) = chars.next() {
        if c == '&' {
            let body_start = pos + 1;
            let body_len = wire[body_start..]
                .find('-')
                .ok_or(Mutf7Error::Unterminated(pos))?;
            let body = &wire[body_start..body_start + body_len];
            if body.is_empty() {
                out.push('&');
            } else {
                decode_run(body, pos, body_start, &mut out)?;
            }
            // Skip the body and the `-`, all ASCII when we get here (a
            // non-ASCII body fails in decode_run), so one char per byte.
            for _ in 0..=body_len {
                chars.next();
            }
        } else if is_direct(c) {
            out.push(c);
        } else {
            return Err(Mutf7Error::Unencoded { pos, ch: c });
        }
    }
    Ok(out)
}

/// Like [`decode`], but returns the input unchanged when it is not valid
/// modified UTF-7. That also covers servers that send raw UTF-8 names
/// (RFC 6855 UTF8=ACCEPT), which are then shown as they are.
pub fn decode_lossy(wire: &str) -> String {
    decode(wire).unwrap_or_else(|_| wire.to_string())
}

/// Characters that represent themselves on the wire (`&` escaped as `&-`).
fn is_direct(c: char) -> bool {
    (' '..='~').contains(&c)
}

/// Writes a pending run of UTF-16 code units as `&...-` and clears it.
fn flush_run(run: &mut Vec<u16>, out: &mut String) {
    if run.is_empty() {
        return;
    }
    let bytes: Vec<u8> = run.iter().flat_map(|u| u.to_be_bytes()).collect();
    out.push('&');
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        // 1, 2 or 3 bytes need 2, 3 or 4 characters; no `=` padding.
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out.push('-');
    run.clear();
}

/// Decodes the body of one `&...-` run (without `&` and `-`) into `out`.
/// `run_pos` is the offset of the `&`, `body_start` that of the body.
fn decode_run(
    body: &str,
    run_pos: usize,
    body_start: usize,
    out: &mut String,
) -> Result<(), Mutf7Error> {
    let mut bytes = Vec::with_capacity(body.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for (i, ch) in body.char_indices() {
        let value = u8::try_from(ch)
            .ok()
            .and_then(|b| ALPHABET.iter().position(|&a| a == b))
            .ok_or(Mutf7Error::InvalidBase64 {
                pos: body_start + i,
                ch,
            })?;
        // position() is below 64, so the cast is lossless.
        acc = (acc << 6) | value as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            bytes.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // Leftover bits must be padding: fewer than 6 and all zero. A run of
    // 4n+1 characters leaves 6 bits, which cannot happen in valid output.
    if bits >= 6 || acc != 0 || bytes.len() % 2 != 0 {
        return Err(Mutf7Error::BadLength(run_pos));
    }
    let units = bytes
        .chunks_exact(2)
        .map(|pair| u16::from_be_bytes([pair[0], pair[1]]));
    for unit in char::decode_utf16(units) {
        out.push(unit.map_err(|_| Mutf7Error::UnpairedSurrogate(run_pos))?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(name: &str, wire: &str) {
        assert_eq!(encode(name), wire, "encode {name:?}");
        assert_eq!(decode(wire).as_deref(), Ok(name), "decode {wire:?}");
    }

    #[test]
    fn ascii_passes_through() {
        round_trip("INBOX", "INBOX");
        round_trip("Sent Items/2024 ~x", "Sent Items/2024 ~x");
        round_trip("", "");
    }

    #[test]
    fn ampersand_is_escaped() {
        round_trip("&", "&-");
        round_trip("Tom & Jerry", "Tom &- Jerry");
        round_trip("&&", "&-&-");
    }

    #[test]
    fn chinese_round_trip() {
        round_trip("其他文件夹/工作", "&UXZO1mWHTvZZOQ-/&XeVPXA-");
        round_trip("草稿箱", "&g0l6P3ux-");
    }

    #[test]
    fn rfc3501_example() {
        round_trip("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-");
    }

    #[test]
    fn supplementary_plane_uses_surrogate_pairs() {
        // 😀 is D83D DE00, 𠀀 is D840 DC00 in UTF-16.
        round_trip("😀", "&2D3eAA-");
        round_trip("a𠀀b", "a&2EDcAA-b");
        round_trip("😀&𠀀", "&2D3eAA-&-&2EDcAA-");
    }

    #[test]
    fn controls_and_non_ascii_latin_are_encoded() {
        round_trip("a\tb", "a&AAk-b");
        round_trip("Entwürfe", "Entw&APw-rfe");
    }

    #[test]
    fn non_canonical_but_unambiguous_forms_decode() {
        // "abc" encoded although it could stand for itself.
        assert_eq!(decode("&AGEAYgBj-").as_deref(), Ok("abc"));
        assert_eq!(decode("&U,A-&U,A-").as_deref(), Ok("台台"));
    }

    #[test]
    fn invalid_inputs_are_errors() {
        assert_eq!(decode("abc&U,BTFw"), Err(Mutf7Error::Unterminated(3)));
        assert_eq!(decode("&"), Err(Mutf7Error::Unterminated(0)));
        assert_eq!(
            decode("&U/BTFw-"),
            Err(Mutf7Error::InvalidBase64 { pos: 2, ch: '/' })
        );
        assert_eq!(
            decode("&U,B=-"),
            Err(Mutf7Error::InvalidBase64 { pos: 4, ch: '=' })
        );
        assert_eq!(
            decode("&台-"),
            Err(Mutf7Error::InvalidBase64 { pos: 1, ch: '台' })
        );
        // Three bytes: one and a half UTF-16 code units.
        assert_eq!(decode("&U,BT-"), Err(Mutf7Error::BadLength(0)));
        // A single character carries only six bits.
        assert_eq!(decode("x&U-"), Err(Mutf7Error::BadLength(1)));
        // Non-zero padding bits ("U,B" would be "U,A").
        assert_eq!(decode("&U,B-"), Err(Mutf7Error::BadLength(0)));
        // A lone high surrogate D83D.
        assert_eq!(decode("&2D0-"), Err(Mutf7Error::UnpairedSurrogate(0)));
        assert_eq!(
            decode("台北"),
            Err(Mutf7Error::Unencoded { pos: 0, ch: '台' })
        );
        assert_eq!(
            decode("a\tb"),
            Err(Mutf7Error::Unencoded { pos: 1, ch: '\t' })
        );
    }

    #[test]
    fn errors_display() {
        assert_eq!(
            Mutf7Error::Unterminated(3).to_string(),
            "unterminated `&` sequence at byte 3"
        );
    }

    #[test]
    fn lossy_returns_input_when_invalid() {
        assert_eq!(decode_lossy("&U,BTFw-"), "台北");
        assert_eq!(decode_lossy("&U,BTFw"), "&U,BTFw");
        assert_eq!(decode_lossy("台北"), "台北");
    }
}
