//! Kubernetes resource quantities (`500m`, `1.5`, `256Mi`, `1e3`), parsed just far enough to
//! compare them: the mutating side must keep every request at or below its limit. The text is
//! kept as written, so a default lands in the pod exactly as the policy file spells it.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Deserializer};

#[derive(Clone, Debug)]
pub struct Quantity {
    text: String,
    /// The value in nano-units, rounded up as the apiserver rounds; i128 holds 1Ei·10⁹ with room.
    nanos: i128,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not a Kubernetes quantity (e.g. 500m, 2, 128Mi, 1G)")]
pub struct QuantityError(pub String);

impl Quantity {
    pub fn parse(text: &str) -> Result<Self, QuantityError> {
        let nanos = parse_nanos(text).ok_or_else(|| QuantityError(text.to_owned()))?;
        Ok(Self {
            text: text.to_owned(),
            nanos,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// A quantity's value in nano-units, negative ones included, as CEL's `quantity()` reads it.
pub fn signed_nanos(text: &str) -> Option<i128> {
    match text.strip_prefix('-') {
        Some(rest) if !rest.starts_with(['-', '+']) => parse_nanos(rest).map(|n| -n),
        _ => parse_nanos(text),
    }
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.nanos == other.nanos
    }
}

impl Eq for Quantity {}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.nanos.cmp(&other.nanos)
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    /// YAML writes `cpu: 1` as a number and `cpu: "1"` as a string; both mean the same.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Int(u64),
            Float(f64),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Text(t) => t,
            Raw::Int(i) => i.to_string(),
            Raw::Float(x) => x.to_string(),
        };
        Quantity::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// `<signedNumber><suffix>` per k8s.io/apimachinery resource.Quantity: decimal SI suffixes,
/// binary suffixes, or a decimal exponent. Negative quantities are refused: no resource is negative.
fn parse_nanos(text: &str) -> Option<i128> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number = number.strip_prefix('+').unwrap_or(number);
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && frac.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || whole.len() > 24
        || frac.len() > 24
    {
        return None;
    }
    // The number as an integer mantissa times 10^-scale.
    let digits = format!("{whole}{frac}");
    let mantissa: i128 = digits.parse().ok()?;
    let scale = frac.len() as i32;
    let (multiplier, exp10): (i128, i32) = match suffix {
        "" => (1, 0),
        "n" => (1, -9),
        "u" => (1, -6),
        "m" => (1, -3),
        "k" => (1, 3),
        "M" => (1, 6),
        "G" => (1, 9),
        "T" => (1, 12),
        "P" => (1, 15),
        "E" => (1, 18),
        "Ki" => (1 << 10, 0),
        "Mi" => (1 << 20, 0),
        "Gi" => (1 << 30, 0),
        "Ti" => (1 << 40, 0),
        "Pi" => (1 << 50, 0),
        "Ei" => (1 << 60, 0),
        s if s.starts_with(['e', 'E']) => {
            let e: i32 = s[1..].parse().ok()?;
            if !(-30..=30).contains(&e) {
                return None;
            }
            (1, e)
        }
        _ => return None,
    };
    // value = mantissa * multiplier * 10^(exp10 - scale); in nanos: * 10^9.
    let shift = exp10 - scale + 9;
    let base = mantissa.checked_mul(multiplier)?;
    if shift >= 0 {
        base.checked_mul(10i128.checked_pow(shift as u32)?)
    } else {
        let div = 10i128.checked_pow((-shift) as u32)?;
        // Round up: the apiserver never lets a quantity shrink below what was asked.
        Some((base + div - 1) / div)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NANO: i128 = 1_000_000_000;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap()
    }

    #[test]
    fn compares_across_suffixes() {
        assert_eq!(q("1"), q("1000m"));
        assert_eq!(q("0.5"), q("500m"));
        assert_eq!(q("1Ki"), q("1024"));
        assert_eq!(q("1k"), q("1e3"));
        assert_eq!(q("1.5Gi"), q("1536Mi"));
        assert!(q("256Mi") > q("256M"));
        assert!(q("100m") < q("0.2"));
        assert_eq!(q("1Ei").nanos, (1i128 << 60) * NANO);
        assert_eq!(q("1n").nanos, 1);
    }

    #[test]
    fn keeps_text_as_written() {
        assert_eq!(q("500m").to_string(), "500m");
    }

    #[test]
    fn refuses_garbage() {
        for bad in [
            "", "m", "-1", "1x", "1.2.3", "1Mii", "1e99", ".", "1 Gi", "0x10",
        ] {
            assert!(Quantity::parse(bad).is_err(), "{bad:?} parsed");
        }
    }
}
