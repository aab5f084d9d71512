//! Secrets the gateways hold (client secrets, account keys) come from an environment variable
//! or a file, never from the config text, so a config can be shown or logged safely.

use zeroize::Zeroizing;

/// Reads a secret from exactly one of the environment variable `env` and the file `file`,
/// trimmed of surrounding whitespace. Errors name `what` and where, never the value.
pub fn read_secret(
    env: Option<&str>,
    file: Option<&str>,
    what: &str,
) -> Result<Zeroizing<String>, String> {
    let text = Zeroizing::new(match (env, file) {
        (Some(_), Some(_)) => return Err(format!("set the {what} by env or by file, not both")),
        (Some(var), None) => std::env::var(var).map_err(|_| format!("${var} is not set"))?,
        (None, Some(path)) => {
            std::fs::read_to_string(path).map_err(|e| format!("reading {path}: {e}"))?
        }
        (None, None) => return Err(format!("no {what}")),
    });
    let trimmed = Zeroizing::new(text.trim().to_owned());
    if trimmed.is_empty() {
        return Err(format!("the {what} is empty"));
    }
    Ok(trimmed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_one_source_and_never_empty() {
        let path = std::env::temp_dir().join(format!("iap-secret-{}", std::process::id()));
        std::fs::write(&path, "  s3cret\n").unwrap();
        let file = path.to_str();
        assert_eq!(read_secret(None, file, "x").unwrap().as_str(), "s3cret");
        assert_eq!(
            read_secret(Some("IAP_SURELY_UNSET_VAR"), None, "x").unwrap_err(),
            "$IAP_SURELY_UNSET_VAR is not set"
        );
        assert_eq!(
            read_secret(Some("A"), file, "client secret").unwrap_err(),
            "set the client secret by env or by file, not both"
        );
        assert_eq!(read_secret(None, None, "key").unwrap_err(), "no key");
        std::fs::write(&path, "\n").unwrap();
        assert_eq!(
            read_secret(None, file, "key").unwrap_err(),
            "the key is empty"
        );
        std::fs::remove_file(&path).unwrap();
    }
}
