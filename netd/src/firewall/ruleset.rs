//! TODO (placeholder until the nftables ruleset lands)
use super::FwState;
pub fn full(_s: &FwState) -> String {
    String::new()
}
pub fn diff(_a: &FwState, _b: &FwState) -> String {
    String::new()
}
