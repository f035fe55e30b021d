//! The envelope of enipin's JSON reports (`status`, `stats`, `doctor`, `config check`): one
//! object whose `schema_version` names its shape. Adding a key keeps the version; renaming or
//! removing one, or changing a value's type, bumps it, so a script can refuse a shape it was
//! not written for instead of reading a missing key as "nothing".

use anyhow::{Result, bail};
use serde::Serialize;
use serde_json::Value;

/// Version 1: CIDRs as `"addr/len"` text everywhere, `stats` an object with `interfaces`.
pub(crate) const SCHEMA_VERSION: u32 = 1;

/// `value` (an object) with `schema_version` in it, pretty-printed.
pub(crate) fn versioned(value: &impl Serialize) -> Result<String> {
    let Value::Object(mut map) = serde_json::to_value(value)? else {
        bail!("a JSON report must be an object");
    };
    map.insert("schema_version".into(), SCHEMA_VERSION.into());
    Ok(serde_json::to_string_pretty(&map)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_report_names_its_shape() {
        let text = versioned(&serde_json::json!({"attached": true})).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["schema_version"], SCHEMA_VERSION);
        assert_eq!(v["attached"], true);
        assert!(versioned(&[1, 2]).is_err());
    }
}
