//! The byte reader of `_metadata`: big-endian `DataInputStream` primitives and counts
//! bounded by the bytes left, each failure naming the offset and what was expected.

use std::sync::Arc;

use super::StateHandle;
use super::modified_utf8::decode_modified_utf8;
use crate::error::MetadataError;

pub(super) struct Parser<'a> {
    pub(super) data: &'a [u8],
    pub(super) pos: usize,
    pub(super) file: &'a str,
    pub(super) version: u32,
    pub(super) location: Arc<str>,
    pub(super) handles: Vec<StateHandle>,
    pub(super) depth: usize,
}

pub(super) type Parsed<T> = Result<T, MetadataError>;

impl<'a> Parser<'a> {
    pub(super) fn new(data: &'a [u8], file: &'a str) -> Self {
        Self {
            data,
            pos: 0,
            file,
            version: 0,
            location: Arc::from(""),
            handles: Vec::new(),
            depth: 0,
        }
    }

    pub(super) fn fail<T>(&self, at: usize, expected: impl Into<String>) -> Parsed<T> {
        Err(MetadataError {
            file: self.file.to_string(),
            offset: at,
            expected: expected.into(),
        })
    }

    pub(super) fn take(&mut self, n: usize, what: &str) -> Parsed<&'a [u8]> {
        if self.data.len().saturating_sub(self.pos) < n {
            let have = self.data.len().saturating_sub(self.pos);
            return self.fail(
                self.pos,
                format!("{what} ({n} bytes), but the file ends after {have}"),
            );
        }
        let slice = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(slice)
    }

    pub(super) fn u8(&mut self, what: &str) -> Parsed<u8> {
        Ok(self.take(1, what)?[0])
    }

    pub(super) fn i32(&mut self, what: &str) -> Parsed<i32> {
        let b = self.take(4, what)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(super) fn i64(&mut self, what: &str) -> Parsed<i64> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_be_bytes(a))
    }

    /// A count that must be non-negative and plausible for the bytes left (each element
    /// takes at least `min_bytes`), so a corrupt count fails here instead of allocating.
    pub(super) fn count(&mut self, what: &str, min_bytes: usize) -> Parsed<usize> {
        let at = self.pos;
        let n = self.i32(what)?;
        let left = self.data.len() - self.pos;
        if n < 0 || (n as usize).saturating_mul(min_bytes.max(1)) > left {
            return self.fail(
                at,
                format!(
                    "{what}: a count between 0 and {} (bytes left), found {n}",
                    left / min_bytes.max(1)
                ),
            );
        }
        Ok(n as usize)
    }

    /// A string and its byte range (positions fit `u32`: the input is at most
    /// [`MAX_METADATA_BYTES`] long, checked first).
    pub(super) fn utf(&mut self, what: &str) -> Parsed<(String, (u32, u32))> {
        let start = self.pos;
        let len_bytes = self.take(2, what)?;
        let len = u16::from_be_bytes([len_bytes[0], len_bytes[1]]) as usize;
        let body = self.take(len, what)?;
        match decode_modified_utf8(body) {
            Some(s) => Ok((s, (start as u32, self.pos as u32))),
            None => self.fail(start, format!("{what} as modified UTF-8")),
        }
    }
}
