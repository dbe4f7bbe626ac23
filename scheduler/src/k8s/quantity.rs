//! Kubernetes resource quantities (k8s.io/apimachinery/pkg/api/resource), parsed and rounded
//! as apimachinery does: `ParseQuantity`'s scanner and suffix table, then `Value()` /
//! `MilliValue()`, which round away from zero.
//!
//! Where apimachinery's answer is an artefact of its int64 representation (wrapping on
//! overflow, truncating exponents to int32, capping binary-suffixed values at 2^63-1)
//! twinsite returns [`QuantityError::TooLarge`] instead. The rule followed is the one the
//! `Quantity` type documents: "No matter which of the three exponent forms is used, no
//! quantity may represent a number greater than 2^63-1 in magnitude". apimachinery's
//! `ParseQuantity` silently caps a `BinarySI` amount there (`99999999999999999999Ei` reads as
//! 8 EiB, a TODO in its source), while a decimal one of the same size overflows; twinsite
//! refuses both, as it refuses a CPU that does not fit, so no request is quietly changed.
//!
//! Strings whose number has no digit at all (`.`, `-`, `Gi`) are rejected although
//! apimachinery's scanner reads them as zero: they do not match apimachinery's own documented
//! regular expression for `Gi`/`-`, and a bare `.` is never what a person meant. Strings
//! longer than [`MAX_QUANTITY_CHARS`] are refused before any arithmetic, which is exact on
//! the digits and so would grow with their number.

use std::fmt;

use serde::{Deserialize, Serialize};

pub use crate::limits::MAX_QUANTITY_CHARS;

/// A quantity string as written by the user, e.g. `100m`, `1.5`, `1Gi`, `1e3`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Quantity(pub String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error(
        "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {0:?}"
    )]
    Format(String),
    #[error("quantity {0:?} is too large")]
    TooLarge(String),
    /// More than [`MAX_QUANTITY_CHARS`] characters; the text is shown shortened.
    #[error("quantity {0:?}… is longer than {MAX_QUANTITY_CHARS} characters")]
    TooLong(String),
    /// The suffix scanned but is not one Kubernetes knows (`0.1mi`, `1i`, `1e`).
    #[error(
        "unable to parse quantity's suffix (expected one of n u m k M G T P E Ki Mi Gi Ti Pi Ei or an exponent like e3): {0:?}"
    )]
    Suffix(String),
}

impl Quantity {
    pub fn new(text: impl Into<String>) -> Self {
        Quantity(text.into())
    }

    /// `MilliValue()`: the value × 1000, rounded up (ceil) as apimachinery does. CPU.
    pub fn milli_value(&self) -> Result<i64, QuantityError> {
        self.scaled_value(3)
    }

    /// `Value()`: the value rounded up to an integer. Memory bytes, pod counts.
    pub fn value(&self) -> Result<i64, QuantityError> {
        self.scaled_value(0)
    }

    /// Checks the string parses, without computing a value.
    pub fn validate(&self) -> Result<(), QuantityError> {
        ParsedQuantity::parse(&self.0).map(|_| ())
    }

    /// The value × 10^`decimal_places`, rounded away from zero (apimachinery's
    /// `ScaledValue(-decimal_places)`).
    pub fn scaled_value(&self, decimal_places: u32) -> Result<i64, QuantityError> {
        let wide = ParsedQuantity::parse(&self.0)?.scaled_value(decimal_places);
        wide.and_then(|v| i64::try_from(v).ok())
            .ok_or_else(|| QuantityError::TooLarge(self.0.clone()))
    }

    /// The value in billionths, exactly as apimachinery stores a parsed quantity (rounded up
    /// to a nano, binary suffixes capped at 2^63-1). Wide, so that sums of quantities can
    /// be rounded once at the end as Kubernetes rounds `Quantity.Add` results.
    pub fn nano_value(&self) -> Result<i128, QuantityError> {
        ParsedQuantity::parse(&self.0)?
            .scaled_value(9)
            .ok_or_else(|| QuantityError::TooLarge(self.0.clone()))
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for Quantity {
    fn from(text: &str) -> Self {
        Quantity(text.to_owned())
    }
}

/// How the suffix scales the number, as in apimachinery's `suffixHandler.interpret`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scaling {
    /// `n u m "" k M G T P E` and `e<exp>`: × 10^exponent.
    Decimal(i64),
    /// `Ki Mi Gi Ti Pi Ei`: × 2^exponent. apimachinery caps these at 2^63-1.
    Binary(u32),
}

/// A quantity as an exact rational: `digits × 10^-fraction_digits × scaling`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ParsedQuantity {
    negative: bool,
    /// Numerator and denominator digits concatenated, leading zeros stripped.
    digits: String,
    fraction_digits: usize,
    scaling: Scaling,
}

impl ParsedQuantity {
    /// apimachinery's `parseQuantityString` followed by the suffix lookup.
    fn parse(text: &str) -> Result<ParsedQuantity, QuantityError> {
        if text.len() > MAX_QUANTITY_CHARS {
            let shown: String = text.chars().take(32).collect();
            return Err(QuantityError::TooLong(shown));
        }
        let format_error = || QuantityError::Format(text.to_owned());
        let bytes = text.as_bytes();
        let mut pos = 0;
        let mut negative = false;
        match bytes.first() {
            None => return Err(format_error()),
            Some(b'-') => {
                negative = true;
                pos = 1;
            }
            Some(b'+') => pos = 1,
            Some(_) => {}
        }
        let number_start = pos;
        let integer_end = scan_digits(bytes, pos);
        let integer = &text[pos..integer_end];
        pos = integer_end;
        let mut fraction = "";
        if bytes.get(pos) == Some(&b'.') {
            let fraction_end = scan_digits(bytes, pos + 1);
            fraction = &text[pos + 1..fraction_end];
            pos = fraction_end;
        }
        if pos == number_start || (integer.is_empty() && fraction.is_empty()) {
            return Err(format_error());
        }

        let suffix_start = pos;
        while bytes.get(pos).is_some_and(|b| b"eEinumkKMGTP".contains(b)) {
            pos += 1;
        }
        if matches!(bytes.get(pos), Some(b'-' | b'+')) {
            pos += 1;
        }
        pos = scan_digits(bytes, pos);
        if pos != bytes.len() {
            return Err(format_error());
        }
        let suffix = &text[suffix_start..];
        let scaling =
            interpret_suffix(suffix).ok_or_else(|| QuantityError::Suffix(text.to_owned()))?;

        let mut digits = String::with_capacity(integer.len() + fraction.len());
        digits.push_str(integer);
        digits.push_str(fraction);
        let digits = digits.trim_start_matches('0').to_owned();
        Ok(ParsedQuantity {
            negative,
            digits,
            fraction_digits: fraction.len(),
            scaling,
        })
    }

    /// `ceil(|value| × 10^decimal_places)` with the sign put back, or `None` past i128.
    fn scaled_value(&self, decimal_places: u32) -> Option<i128> {
        let magnitude = match self.scaling {
            Scaling::Decimal(exponent) => {
                let power_of_ten = i128::from(exponent) - self.fraction_digits as i128
                    + i128::from(decimal_places);
                ceil_magnitude(&self.digits, 0, power_of_ten)?
            }
            Scaling::Binary(exponent) => {
                // Past 2^63-1 apimachinery caps a binary quantity; twinsite refuses it (see
                // the module comment), as it refuses a decimal one.
                let units =
                    ceil_magnitude(&self.digits, exponent, -(self.fraction_digits as i128))?;
                if units > i64::MAX as u128 {
                    return None;
                }
                ceil_magnitude(
                    &self.digits,
                    exponent,
                    i128::from(decimal_places) - self.fraction_digits as i128,
                )?
            }
        };
        let magnitude = i128::try_from(magnitude).ok()?;
        Some(if self.negative { -magnitude } else { magnitude })
    }
}

fn scan_digits(bytes: &[u8], from: usize) -> usize {
    let mut pos = from;
    while bytes.get(pos).is_some_and(u8::is_ascii_digit) {
        pos += 1;
    }
    pos
}

fn interpret_suffix(suffix: &str) -> Option<Scaling> {
    let decimal = |e| Some(Scaling::Decimal(e));
    let binary = |e| Some(Scaling::Binary(e));
    match suffix {
        "n" => decimal(-9),
        "u" => decimal(-6),
        "m" => decimal(-3),
        "" => decimal(0),
        "k" => decimal(3),
        "M" => decimal(6),
        "G" => decimal(9),
        "T" => decimal(12),
        "P" => decimal(15),
        "E" => decimal(18),
        "Ki" => binary(10),
        "Mi" => binary(20),
        "Gi" => binary(30),
        "Ti" => binary(40),
        "Pi" => binary(50),
        "Ei" => binary(60),
        _ => {
            let exponent = suffix
                .strip_prefix('e')
                .or_else(|| suffix.strip_prefix('E'))?;
            // Go's strconv.ParseInt(s, 10, 64): optional sign, then at least one digit.
            let unsigned = exponent
                .strip_prefix('+')
                .or_else(|| exponent.strip_prefix('-'))
                .unwrap_or(exponent);
            if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            exponent.parse::<i64>().ok().map(Scaling::Decimal)
        }
    }
}

/// `ceil(digits × 2^binary_exponent × 10^power_of_ten)`, or `None` when it exceeds u128. `digits` has no leading zeros.
fn ceil_magnitude(digits: &str, binary_exponent: u32, power_of_ten: i128) -> Option<u128> {
    let significant = digits.trim_end_matches('0');
    if significant.is_empty() {
        return Some(0);
    }
    let power_of_ten = power_of_ten + (digits.len() - significant.len()) as i128;
    let length = significant.len() as i128;
    // 10^(length-1) <= significant < 10^length, and 2^binary_exponent < 10^19; u128 holds
    // less than 10^39.
    if length - 1 + power_of_ten >= 39 {
        return None;
    }
    if length + power_of_ten + 19 <= 0 {
        // A positive amount below one unit: apimachinery rounds it up to one.
        return Some(1);
    }
    let mut number = BigUint::from_decimal(significant);
    for _ in 0..binary_exponent {
        number.mul_small(2);
    }
    let mut remaining = power_of_ten;
    while remaining > 0 {
        let step = remaining.min(9);
        number.mul_small(10u32.pow(step as u32));
        remaining -= step;
    }
    let mut inexact = false;
    while remaining < 0 {
        let step = (-remaining).min(9);
        inexact |= number.div_small(10u32.pow(step as u32)) != 0;
        remaining += step;
    }
    let floor = number.to_u128()?;
    Some(if inexact {
        floor.checked_add(1)?
    } else {
        floor
    })
}

/// Just enough unsigned big integer for exact decimal scaling: little-endian base-2^32 limbs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BigUint {
    limbs: Vec<u32>,
}

impl BigUint {
    fn from_decimal(digits: &str) -> Self {
        let mut number = BigUint { limbs: Vec::new() };
        for chunk in digits.as_bytes().chunks(9) {
            let mut chunk_value = 0u32;
            for &digit in chunk {
                chunk_value = chunk_value * 10 + u32::from(digit - b'0');
            }
            number.mul_small(10u32.pow(chunk.len() as u32));
            number.add_small(chunk_value);
        }
        number
    }

    fn mul_small(&mut self, factor: u32) {
        let mut carry = 0u64;
        for limb in &mut self.limbs {
            let product = u64::from(*limb) * u64::from(factor) + carry;
            *limb = product as u32;
            carry = product >> 32;
        }
        if carry != 0 {
            self.limbs.push(carry as u32);
        }
    }

    fn add_small(&mut self, addend: u32) {
        let mut carry = u64::from(addend);
        for limb in &mut self.limbs {
            if carry == 0 {
                return;
            }
            let sum = u64::from(*limb) + carry;
            *limb = sum as u32;
            carry = sum >> 32;
        }
        if carry != 0 {
            self.limbs.push(carry as u32);
        }
    }

    /// Divides in place and returns the remainder.
    fn div_small(&mut self, divisor: u32) -> u32 {
        let mut remainder = 0u64;
        for limb in self.limbs.iter_mut().rev() {
            let current = (remainder << 32) | u64::from(*limb);
            *limb = (current / u64::from(divisor)) as u32;
            remainder = current % u64::from(divisor);
        }
        while self.limbs.last() == Some(&0) {
            self.limbs.pop();
        }
        remainder as u32
    }

    fn to_u128(&self) -> Option<u128> {
        if self.limbs.len() > 4 {
            return None;
        }
        Some(
            self.limbs
                .iter()
                .rev()
                .fold(0u128, |acc, &limb| (acc << 32) | u128::from(limb)),
        )
    }
}
