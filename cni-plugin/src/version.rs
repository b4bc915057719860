//! Spec versions: which configs are accepted and what each command needs.

pub const CURRENT: &str = "1.1.0";
pub const SUPPORTED: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

pub fn supported(v: &str) -> bool {
    SUPPORTED.contains(&v)
}

fn parse(v: &str) -> (u32, u32, u32) {
    let mut it = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
    )
}

/// `a >= b` as versions.
pub fn at_least(a: &str, b: &str) -> bool {
    parse(a) >= parse(b)
}

/// The answer to VERSION.
pub fn info() -> serde_json::Value {
    serde_json::json!({ "cniVersion": CURRENT, "supportedVersions": SUPPORTED })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordering() {
        assert!(at_least("1.1.0", "0.4.0"));
        assert!(at_least("0.4.0", "0.4.0"));
        assert!(!at_least("0.3.1", "0.4.0"));
        assert!(!at_least("1.0.0", "1.1.0"));
        assert!(supported("0.3.0") && !supported("0.2.0") && !supported("2.0.0"));
    }
}
