//! Quantities parse and round as apimachinery's `ParseQuantity`, `Value()` and `MilliValue()`.
//! The tables are ported from k8s.io/apimachinery/pkg/api/resource/quantity_test.go; where the
//! Go test states a result as `decQuantity(mantissa, exponent)`, the expected `Value()` and
//! `MilliValue()` are derived from that exact decimal below, independently of the parser.

use proptest::prelude::*;
use scheduler::k8s::{Quantity, QuantityError};

/// `ceil(|mantissa × 10^exponent| × 10^places)` with the sign, or `None` past i64.
fn expected_scaled(mantissa: i128, exponent: i32, places: i32) -> Option<i64> {
    let power = exponent + places;
    let magnitude = mantissa.unsigned_abs();
    let scaled = if power >= 0 {
        magnitude.checked_mul(10u128.checked_pow(power as u32)?)?
    } else {
        let divisor = 10u128.checked_pow((-power) as u32)?;
        magnitude.div_ceil(divisor)
    };
    let scaled = i128::try_from(scaled).ok()?;
    i64::try_from(if mantissa < 0 { -scaled } else { scaled }).ok()
}

/// Ceiling of `a / b` for non-negative `a`, without overflow.
fn ceil_div(a: i64, b: i64) -> i64 {
    a / b + i64::from(a % b != 0)
}

fn value(text: &str) -> Result<i64, QuantityError> {
    Quantity::new(text).value()
}

fn milli(text: &str) -> Result<i64, QuantityError> {
    Quantity::new(text).milli_value()
}

/// TestQuantityParse's table, `decQuantity(mantissa, exponent, _)` entries.
const PARSE_TABLE: &[(&str, i128, i32)] = &[
    ("0", 0, 0),
    ("0n", 0, 0),
    ("0u", 0, 0),
    ("0m", 0, 0),
    ("0Ki", 0, 0),
    ("0k", 0, 0),
    ("0Mi", 0, 0),
    ("0M", 0, 0),
    ("0Gi", 0, 0),
    ("0G", 0, 0),
    ("0Ti", 0, 0),
    ("0T", 0, 0),
    // Quantity less numbers are allowed
    ("1", 1, 0),
    // Binary suffixes
    ("1Ki", 1024, 0),
    ("8Ki", 8 * 1024, 0),
    ("7Mi", 7 * 1024 * 1024, 0),
    ("6Gi", 6 * 1024 * 1024 * 1024, 0),
    ("5Ti", 5 * 1024 * 1024 * 1024 * 1024, 0),
    ("4Pi", 4 * 1024 * 1024 * 1024 * 1024 * 1024, 0),
    ("3Ei", 3 * 1024 * 1024 * 1024 * 1024 * 1024 * 1024, 0),
    ("10Ti", 10 * 1024 * 1024 * 1024 * 1024, 0),
    ("100Ti", 100 * 1024 * 1024 * 1024 * 1024, 0),
    // Decimal suffixes
    ("5n", 5, -9),
    ("4u", 4, -6),
    ("3m", 3, -3),
    ("9", 9, 0),
    ("8k", 8, 3),
    ("50k", 5, 4),
    ("7M", 7, 6),
    ("6G", 6, 9),
    ("5T", 5, 12),
    ("40T", 4, 13),
    ("300T", 3, 14),
    ("2P", 2, 15),
    ("1E", 1, 18),
    // Decimal exponents
    ("1E-3", 1, -3),
    ("1e3", 1, 3),
    ("1E6", 1, 6),
    ("1e9", 1, 9),
    ("1E12", 1, 12),
    ("1e15", 1, 15),
    ("1E18", 1, 18),
    // Nonstandard but still parsable
    ("1e14", 1, 14),
    ("1e13", 1, 13),
    ("1e3", 1, 3),
    ("100.035k", 100035, 0),
    // Things that look like floating point
    ("0.001", 1, -3),
    ("0.0005k", 5, -1),
    ("0.005", 5, -3),
    ("0.05", 5, -2),
    ("0.5", 5, -1),
    ("0.00050k", 5, -1),
    ("0.00500", 5, -3),
    ("0.05000", 5, -2),
    ("0.50000", 5, -1),
    ("0.5e0", 5, -1),
    ("0.5e-1", 5, -2),
    ("0.5e-2", 5, -3),
    ("0.5e0", 5, -1),
    ("10.035M", 10035, 3),
    ("1.2e3", 12, 2),
    ("1.3E+6", 13, 5),
    ("1.40e9", 14, 8),
    ("1.53E12", 153, 10),
    ("1.6e15", 16, 14),
    ("1.7E18", 17, 17),
    ("9.01", 901, -2),
    ("8.1k", 81, 2),
    ("7.123456M", 7123456, 0),
    ("6.987654321G", 6987654321, 0),
    ("5.444T", 5444, 9),
    ("40.1T", 401, 11),
    ("300.2T", 3002, 11),
    ("2.5P", 25, 14),
    ("1.01E", 101, 16),
    // Things that saturate/round
    ("3.001n", 4, -9),
    ("1.1E-9", 2, -9),
    ("0.0000000001", 1, -9),
    ("0.0000000005", 1, -9),
    ("0.00000000050", 1, -9),
    ("0.5e-9", 1, -9),
    ("0.9n", 1, -9),
    ("0.00000012345", 124, -9),
    ("0.00000012354", 124, -9),
    ("12E", 12, 18),
    // We'll accept fractional binary stuff, too.
    ("100.035Ki", 10243584, -2),
    ("0.5Mi", 512 * 1024, 0),
    ("0.05Gi", 536870912, -1),
    ("0.025Ti", 274877906944, -1),
    // Things written by trolls
    ("0.000000000001Ki", 2, -9),
    (".001", 1, -3),
    (".0001k", 100, -3),
    ("1.", 1, 0),
    ("1.G", 1, 9),
];

#[test]
fn every_quantity_of_apimachinerys_parse_table_has_the_value_and_milli_value_go_computes() {
    for &(input, mantissa, exponent) in PARSE_TABLE {
        for (sign, signed_mantissa) in [("", mantissa), ("+", mantissa), ("-", -mantissa)] {
            let text = format!("{sign}{input}");
            let want_value = expected_scaled(signed_mantissa, exponent, 0);
            let want_milli = expected_scaled(signed_mantissa, exponent, 3);
            assert_eq!(
                value(&text).ok(),
                want_value,
                "Value() of {text:?} (err: {:?})",
                value(&text).err()
            );
            assert_eq!(
                milli(&text).ok(),
                want_milli,
                "MilliValue() of {text:?} (err: {:?})",
                milli(&text).err()
            );
        }
    }
}

#[test]
fn a_binary_quantity_above_int64_is_too_large_where_apimachinery_would_cap_it() {
    // TestQuantityParse caps these at maxAllowed ({"9Ei", maxAllowed},
    // {"9223372036854775807Ki", maxAllowed}); the Quantity documentation says no quantity may
    // exceed 2^63-1, and a capped memory request is not the one the user wrote.
    for text in [
        "9Ei",
        "9223372036854775807Ki",
        "8Ei",
        "-9Ei",
        "99999999999999999999Ei",
    ] {
        let too_large = Err(QuantityError::TooLarge(text.to_owned()));
        assert_eq!(value(text), too_large, "{text}");
        assert_eq!(milli(text), too_large, "{text}");
        assert_eq!(Quantity::new(text).nano_value().ok(), None, "{text}");
    }
    assert_eq!(value("7Ei"), Ok(7 << 60), "the largest whole Ei that fits");
    assert_eq!(
        value("8191Pi"),
        Ok(8191 << 50),
        "just under 2^63 in a smaller suffix"
    );
}

#[test]
fn memory_and_cpu_of_the_same_oversize_amount_are_refused_alike() {
    let oversize = "99999999999999999999Ei";
    assert!(matches!(value(oversize), Err(QuantityError::TooLarge(_))));
    assert!(matches!(milli(oversize), Err(QuantityError::TooLarge(_))));
}

#[test]
fn a_quantity_longer_than_the_bound_is_refused_before_any_arithmetic() {
    let long = format!(
        "0.{}1",
        "0".repeat(scheduler::k8s::quantity::MAX_QUANTITY_CHARS)
    );
    assert!(matches!(value(&long), Err(QuantityError::TooLong(_))));
    let at_bound = format!(
        "0.{}1",
        "0".repeat(scheduler::k8s::quantity::MAX_QUANTITY_CHARS - 3)
    );
    assert_eq!(
        value(&at_bound),
        Ok(1),
        "a tiny amount rounds up to one unit"
    );
    // A megabyte of digits would take the exact arithmetic minutes; the bound answers at once.
    let huge = "7".repeat(1 << 20);
    assert!(matches!(milli(&huge), Err(QuantityError::TooLong(_))));
}

#[test]
fn a_decimal_quantity_past_int64_is_too_large_instead_of_wrapping() {
    for text in [
        "12E",
        "9223372036854775808",
        "1e19",
        "1e100",
        "1e9223372036854775807",
        "10000P",
    ] {
        assert_eq!(value(text), Err(QuantityError::TooLarge(text.to_owned())));
    }
    assert_eq!(value("9223372036854775807"), Ok(i64::MAX));
    assert_eq!(value("-9223372036854775808"), Ok(i64::MIN));
    assert_eq!(
        milli("9223372036854775807m"),
        Ok(i64::MAX),
        "the largest milli value fits exactly"
    );
    assert_eq!(
        milli("9223372036854776"),
        Err(QuantityError::TooLarge("9223372036854776".to_owned()))
    );
}

#[test]
fn a_tiny_positive_amount_rounds_up_to_one_unit_however_small_the_exponent() {
    assert_eq!(value("1e-9223372036854775808"), Ok(1));
    assert_eq!(milli("1e-400"), Ok(1));
    assert_eq!(milli("-1e-400"), Ok(-1));
    assert_eq!(milli("0e-400"), Ok(0));
    assert_eq!(
        milli("0.000000000000000000000000000000000000000000000000000000000000000001"),
        Ok(1)
    );
}

#[test]
fn a_long_fraction_is_rounded_from_its_exact_value() {
    // 1.0000...0001 (45 decimals) is above 1: one more unit, as ceil demands.
    let text = format!("1.{}1", "0".repeat(44));
    assert_eq!(value(&text), Ok(2));
    assert_eq!(milli(&text), Ok(1001));
    let text = format!("1.{}", "0".repeat(60));
    assert_eq!(value(&text), Ok(1));
    assert_eq!(milli(&format!("{}m", "0".repeat(80))), Ok(0));
}

#[test]
fn apimachinerys_invalid_quantities_are_rejected() {
    // TestQuantityParse's `invalid` list.
    for text in [
        "1.1.M", "1+1.0M", "0.1mi", "0.1am", "aoeu", ".5i", "1i", "-3.01i", "-3.01e-", " 1", "1 ",
    ] {
        assert!(value(text).is_err(), "{text:?} parsed");
        assert!(
            Quantity::new(text).validate().is_err(),
            "{text:?} validated"
        );
    }
}

#[test]
fn strings_that_are_not_a_number_with_a_known_suffix_are_rejected() {
    for text in [
        "", ".", "-", "+", "-.", "Gi", "m", "1.2.3", "1Gb", "1 Gi", "1e", "1E-", "1e+", "1Ki3",
        "1ee3", "1e3e3", "1KiB", "1g", "0x10", "1_000", "١", "1\u{0}", "--1", "+-1", "1e3.5",
        "1.5.Gi",
    ] {
        assert!(
            matches!(
                value(text),
                Err(QuantityError::Format(_) | QuantityError::Suffix(_))
            ),
            "{text:?} gave {:?}",
            value(text)
        );
    }
}

#[test]
fn a_parse_error_names_the_offending_string() {
    let message = value("1Gb").unwrap_err().to_string();
    assert!(message.contains("\"1Gb\""), "{message}");
    assert!(message.starts_with("quantities must match the regular expression"));
    let message = value("0.1mi").unwrap_err().to_string();
    assert!(
        message.contains("suffix") && message.contains("\"0.1mi\""),
        "{message}"
    );
}

#[test]
fn rounding_is_away_from_zero_at_every_scale_as_apimachinerys_round_up() {
    // TestQuantityRoundUp: 9.01 rounds to 10 at scale 0, -9.01 to -10.
    assert_eq!(value("9.01"), Ok(10));
    assert_eq!(value("-9.01"), Ok(-10));
    assert_eq!(milli("9.01"), Ok(9010));
    assert_eq!(milli("-9.01"), Ok(-9010));
    assert_eq!(Quantity::new("9.01").scaled_value(1), Ok(91));
    assert_eq!(Quantity::new("-9.01").scaled_value(1), Ok(-91));
    assert_eq!(Quantity::new("9.01").scaled_value(2), Ok(901));
    assert_eq!(Quantity::new("9.01").scaled_value(3), Ok(9010));
}

#[test]
fn milli_and_plain_values_round_trip_the_canonical_strings_of_new_quantity() {
    // TestMilliNewSet / TestNewSet: the canonical string parses back to the value.
    for (text, want_milli) in [
        ("1m", 1),
        ("1", 1000),
        ("1234", 1_234_000),
        ("1e3", 1_000_000),
        ("1024m", 1024),
        ("1048576m", 1024 * 1024),
    ] {
        assert_eq!(milli(text), Ok(want_milli), "{text}");
    }
    for (text, want) in [
        ("1", 1),
        ("1k", 1000),
        ("1234k", 1_234_000),
        ("1Ki", 1024),
        ("1e6", 1_000_000),
        ("1Mi", 1024 * 1024),
    ] {
        assert_eq!(value(text), Ok(want), "{text}");
    }
}

#[test]
fn a_single_unit_at_any_scale_has_the_scaled_values_of_apimachinerys_table() {
    // TestScaledValue: NewScaledQuantity(1, from).ScaledValue(to), written as strings.
    for (text, places, want) in [
        ("1n", 9, 1),
        ("1n", 6, 1),
        ("1n", 3, 1),
        ("1n", 0, 1),
        ("1u", 9, 1000),
        ("1u", 6, 1),
        ("1u", 3, 1),
        ("1u", 0, 1),
        ("1m", 9, 1_000_000),
        ("1m", 6, 1000),
        ("1m", 3, 1),
        ("1m", 0, 1),
        ("1", 9, 1_000_000_000),
        ("1", 6, 1_000_000),
        ("1", 3, 1000),
        ("1", 0, 1),
        ("100", 2, 10_000),
    ] {
        assert_eq!(
            Quantity::new(text).scaled_value(places),
            Ok(want),
            "{text} at 10^-{places}"
        );
    }
}

#[test]
fn the_quantities_kubectl_prints_for_real_nodes_have_their_expected_values() {
    assert_eq!(milli("64"), Ok(64_000));
    assert_eq!(milli("63770m"), Ok(63_770));
    assert_eq!(value("263518068Ki"), Ok(263_518_068 * 1024));
    assert_eq!(value("110"), Ok(110));
    assert_eq!(milli("1.5"), Ok(1500));
    assert_eq!(value("1G"), Ok(1_000_000_000));
    assert_eq!(value("1.5Gi"), Ok(1_610_612_736));
    assert_eq!(value("100m"), Ok(1), "a fraction of a byte is one byte");
}

proptest! {
    #[test]
    fn parsing_never_panics_on_arbitrary_text(text in ".{0,40}") {
        let quantity = Quantity::new(text);
        let _ = quantity.value();
        let _ = quantity.milli_value();
        let _ = quantity.validate();
    }

    #[test]
    fn parsing_never_panics_on_quantity_shaped_text(
        text in "[+-]?[0-9.]{0,25}[eEinumkKMGTP]{0,3}[-+]?[0-9]{0,25}"
    ) {
        let quantity = Quantity::new(text);
        let _ = quantity.value();
        let _ = quantity.milli_value();
    }

    #[test]
    fn an_integer_written_plainly_has_itself_as_value_and_a_thousand_times_itself_as_milli_value(
        n in -9_223_372_036_854_775i64..9_223_372_036_854_775
    ) {
        prop_assert_eq!(value(&n.to_string()), Ok(n));
        prop_assert_eq!(milli(&n.to_string()), Ok(n * 1000));
    }

    #[test]
    fn millicores_written_with_the_m_suffix_are_their_own_milli_value(n in 0i64..i64::MAX) {
        prop_assert_eq!(milli(&format!("{n}m")), Ok(n));
        prop_assert_eq!(value(&format!("{n}m")), Ok(ceil_div(n, 1000)));
    }

    #[test]
    fn a_binary_suffix_multiplies_by_its_power_of_1024(n in 0i64..1_000_000, power in 1u32..4) {
        let suffix = ["Ki", "Mi", "Gi"][(power - 1) as usize];
        prop_assert_eq!(value(&format!("{n}{suffix}")), Ok(n << (10 * power)));
    }

    #[test]
    fn a_decimal_fraction_rounds_up_to_the_next_millicore(
        whole in 0i64..1_000_000, fraction in 0u32..1_000_000
    ) {
        let text = format!("{whole}.{fraction:06}");
        let micros = whole * 1_000_000 + i64::from(fraction);
        prop_assert_eq!(milli(&text), Ok(ceil_div(micros, 1000)));
        prop_assert_eq!(value(&text), Ok(ceil_div(micros, 1_000_000)));
    }

    #[test]
    fn a_quantity_and_its_exponent_spelling_agree(mantissa in 0i64..1_000_000, exponent in -12i32..12) {
        let text = format!("{mantissa}e{exponent}");
        prop_assert_eq!(milli(&text).ok(), expected_scaled(i128::from(mantissa), exponent, 3));
        prop_assert_eq!(value(&text).ok(), expected_scaled(i128::from(mantissa), exponent, 0));
    }
}
