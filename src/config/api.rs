//! The `api` section: listen address, where the admin and read-only tokens come from, body bound.
//! Must never: read a token here; `token` reads it at start, so no token sits in `Config`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use scheduler::input::Problems;

use super::file::ApiSpec;
use super::resolved::{ApiConfig, TokenSource};

pub(super) fn resolve_api(
    api: &ApiSpec,
    absolute: &dyn Fn(&Path) -> PathBuf,
    problems: &mut Problems,
) -> Option<ApiConfig> {
    let listen = match api.listen.parse::<SocketAddr>() {
        Ok(addr) => Some(addr),
        Err(_) => {
            problems.field(
                "api.listen",
                format!(
                    "expected HOST:PORT with an IP address, e.g. 127.0.0.1:8080, found {:?}",
                    api.listen
                ),
            );
            None
        }
    };
    let mut token_source = |file_field: &str,
                            env_field: &str,
                            path: &Option<PathBuf>,
                            var: &Option<String>| match (path, var) {
        (Some(_), Some(_)) => {
            problems.field(
                "api",
                format!("set only one of {file_field} and {env_field}"),
            );
            TokenSource::None
        }
        (Some(path), None) => TokenSource::File(absolute(path)),
        (None, Some(var)) if var.is_empty() => {
            problems.field(
                format!("api.{env_field}"),
                "must name an environment variable",
            );
            TokenSource::None
        }
        (None, Some(var)) => TokenSource::Env(var.clone()),
        (None, None) => TokenSource::None,
    };
    let token = token_source("tokenFile", "tokenEnv", &api.token_file, &api.token_env);
    let read_token = token_source(
        "readTokenFile",
        "readTokenEnv",
        &api.read_token_file,
        &api.read_token_env,
    );
    if token != TokenSource::None && token == read_token {
        problems.field(
            "api.readTokenFile",
            "names the same source as the admin token: the read-only role would be an admin",
        );
    }
    if api.max_body_bytes == 0 {
        problems.field("api.maxBodyBytes", "must be at least 1");
    }
    Some(ApiConfig {
        listen: listen?,
        token,
        read_token,
        metrics_require_token: api.metrics_require_token,
        max_body_bytes: api.max_body_bytes,
    })
}
