//! Java's modified UTF-8 (`DataOutputStream#writeUTF`): how `_metadata` stores every
//! string. NUL takes two bytes and supplementary characters are surrogate pairs.

/// Java's modified UTF-8 (`DataOutputStream#writeUTF`) with its u16 length prefix.
pub fn encode_modified_utf8(text: &str) -> Option<Vec<u8>> {
    let mut body = Vec::with_capacity(text.len());
    for unit in text.encode_utf16() {
        match unit {
            0x0001..=0x007f => body.push(unit as u8),
            0x0000 | 0x0080..=0x07ff => {
                body.push(0xc0 | ((unit >> 6) & 0x1f) as u8);
                body.push(0x80 | (unit & 0x3f) as u8);
            }
            _ => {
                body.push(0xe0 | ((unit >> 12) & 0x0f) as u8);
                body.push(0x80 | ((unit >> 6) & 0x3f) as u8);
                body.push(0x80 | (unit & 0x3f) as u8);
            }
        }
    }
    let len = u16::try_from(body.len()).ok()?;
    let mut out = len.to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    Some(out)
}

pub(super) fn decode_modified_utf8(bytes: &[u8]) -> Option<String> {
    let mut units = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b & 0x80 == 0 {
            units.push(u16::from(b));
            i += 1;
        } else if b & 0xe0 == 0xc0 {
            let b2 = *bytes.get(i + 1)?;
            if b2 & 0xc0 != 0x80 {
                return None;
            }
            units.push((u16::from(b & 0x1f) << 6) | u16::from(b2 & 0x3f));
            i += 2;
        } else if b & 0xf0 == 0xe0 {
            let b2 = *bytes.get(i + 1)?;
            let b3 = *bytes.get(i + 2)?;
            if b2 & 0xc0 != 0x80 || b3 & 0xc0 != 0x80 {
                return None;
            }
            units.push(
                (u16::from(b & 0x0f) << 12) | (u16::from(b2 & 0x3f) << 6) | u16::from(b3 & 0x3f),
            );
            i += 3;
        } else {
            return None;
        }
    }
    String::from_utf16(&units).ok()
}
