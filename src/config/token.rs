//! Reading the API tokens at start, from a private file or an environment variable.
//! Must never: log, echo or put a token in an error; messages name its setting, file or variable.

use std::path::Path;

use super::resolved::TokenSource;

impl TokenSource {
    /// Reads the admin token; `Ok(None)` when none is configured.
    pub fn read(&self) -> Result<Option<String>, String> {
        self.read_as("api.tokenFile", "api.tokenEnv")
    }

    /// Reads a token; errors name `file_field` or `env_field`, never the token. A file
    /// other users may read is refused (see [`check_private_file`]).
    pub fn read_as(&self, file_field: &str, env_field: &str) -> Result<Option<String>, String> {
        let token = match self {
            TokenSource::None => return Ok(None),
            TokenSource::File(path) => {
                check_private_file(path, file_field)?;
                std::fs::read_to_string(path)
                    .map_err(|e| format!("{file_field} {}: cannot read: {e}", path.display()))?
            }
            TokenSource::Env(var) => std::env::var(var)
                .map_err(|_| format!("{env_field}: environment variable {var} is not set"))?,
        };
        let token = token.trim_end_matches(['\n', '\r']).to_string();
        if token.len() < 16 {
            return Err(format!(
                "{}: the API token must be at least 16 characters",
                match self {
                    TokenSource::File(path) => format!("{file_field} {}", path.display()),
                    TokenSource::Env(var) => format!("{env_field} {var}"),
                    TokenSource::None => String::new(),
                }
            ));
        }
        Ok(Some(token))
    }
}

/// Refuses a token file that its group or other users may read or write: anyone who can
/// read it holds the API. A missing file passes here (reading it then fails, naming it).
/// `field` names the setting in the message (`api.tokenFile`).
pub fn check_private_file(path: &Path, field: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let Ok(metadata) = std::fs::metadata(path) else {
        return Ok(());
    };
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{field} {path}: mode {mode:04o} lets other users read or replace the token (the group or the world has access); run `chmod 600 {path}` (for a Kubernetes Secret volume: defaultMode: 0400)",
            path = path.display()
        ));
    }
    Ok(())
}
