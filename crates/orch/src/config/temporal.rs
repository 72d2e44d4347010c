//! Temporal: `TEMPORAL_HOST` and how orch is secured towards it: TLS (`TEMPORAL_TLS`,
//! `TEMPORAL_TLS_CA_FILE`, `TEMPORAL_TLS_SERVER_NAME`), mTLS (`TEMPORAL_TLS_CERT_FILE`,
//! `TEMPORAL_TLS_KEY_FILE`) and an API key for a hosted Temporal (`TEMPORAL_API_KEY`). Files
//! are read at start, so that a missing or malformed one stops orch with its name.

use orch_workflows::{TemporalSecurity, TemporalTls};

use super::{invalid, parse_bool, ConfigError, Sources};

impl Sources {
    /// `HOST:PORT` of a Temporal server; none means `orch dev` starts one.
    pub(super) fn load_temporal_host(&self) -> Result<Option<String>, ConfigError> {
        let Some(host) = self.non_empty("TEMPORAL_HOST") else {
            return Ok(None);
        };
        let valid = host
            .rsplit_once(':')
            .is_some_and(|(name, port)| !name.is_empty() && port.parse::<u16>().is_ok());
        if !valid {
            return Err(invalid("TEMPORAL_HOST", "must be HOST:PORT, e.g. localhost:7233"));
        }
        Ok(Some(host.to_owned()))
    }

    /// TLS is on when `TEMPORAL_TLS` says so, or when any other TLS setting or an API key is
    /// given (a key never travels in the clear); `TEMPORAL_TLS=false` with those is an error.
    pub(super) fn load_temporal_security(&self) -> Result<TemporalSecurity, ConfigError> {
        let api_key = self.non_empty("TEMPORAL_API_KEY").map(str::to_owned);
        let server_ca = self.pem_file("TEMPORAL_TLS_CA_FILE", "CERTIFICATE")?;
        let server_name = self.non_empty("TEMPORAL_TLS_SERVER_NAME").map(str::to_owned);
        let client_identity = match (
            self.pem_file("TEMPORAL_TLS_CERT_FILE", "CERTIFICATE")?,
            self.pem_file("TEMPORAL_TLS_KEY_FILE", "PRIVATE KEY")?,
        ) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            (Some(_), None) => {
                return Err(invalid(
                    "TEMPORAL_TLS_KEY_FILE",
                    "is needed with TEMPORAL_TLS_CERT_FILE",
                ))
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "TEMPORAL_TLS_CERT_FILE",
                    "is needed with TEMPORAL_TLS_KEY_FILE",
                ))
            }
        };
        let implied = server_ca.is_some() || server_name.is_some() || client_identity.is_some() || api_key.is_some();
        let tls = match self.get("TEMPORAL_TLS").filter(|value| !value.trim().is_empty()) {
            None => implied,
            Some(value) => {
                let on = parse_bool("TEMPORAL_TLS", value)?;
                if !on && implied {
                    return Err(invalid(
                        "TEMPORAL_TLS",
                        "is false, but a TEMPORAL_TLS_* file or name or TEMPORAL_API_KEY is set; \
                         those need TLS",
                    ));
                }
                on
            }
        };
        Ok(TemporalSecurity {
            tls: tls.then_some(TemporalTls {
                server_ca,
                server_name,
                client_identity,
            }),
            api_key,
        })
    }

    /// The PEM file named by `variable`, which must hold a `-----BEGIN ...{kind}-----` block.
    fn pem_file(&self, variable: &str, kind: &str) -> Result<Option<Vec<u8>>, ConfigError> {
        let Some(path) = self.non_empty(variable) else {
            return Ok(None);
        };
        let bytes = std::fs::read(path).map_err(|error| invalid(variable, format!("cannot read {path}: {error}")))?;
        let text = String::from_utf8_lossy(&bytes);
        let pem = text
            .lines()
            .any(|line| line.starts_with("-----BEGIN ") && line.trim_end().ends_with(&format!("{kind}-----")));
        if !pem {
            return Err(invalid(variable, format!("{path} holds no PEM {kind}")));
        }
        Ok(Some(bytes))
    }
}
