//! The demo's HTTP client: what a staff member's or insurer's program does, through the public
//! API only (sign in, with TOTP where it is on; send commands; read).

use anyhow::{Context, Result, bail};
use platform::totp::TotpSecret;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct Http {
    client: reqwest::Client,
}

/// A signed-in user at one service.
#[derive(Clone, Debug)]
pub struct Session {
    pub base: String,
    pub token: String,
    pub who: String,
}

/// What a sign-in came to.
#[derive(Debug)]
pub enum Login {
    Token(String),
    /// The password was right but the user has multi-factor sign-in on.
    MfaRequired,
}

impl Http {
    pub fn new() -> Result<Http> {
        Ok(Http {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .context("making the HTTP client")?,
        })
    }

    /// Waits until `url` answers 200 (a service's `/readyz`).
    pub async fn wait_ready(&self, url: &str, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let last = match self.client.get(url).send().await {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => format!("{}", r.status()),
                Err(e) => e.to_string(),
            };
            if Instant::now() > deadline {
                bail!("{url} is not ready after {within:?}: {last}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    pub async fn login(
        &self,
        base: &str,
        username: &str,
        password: &str,
        totp: Option<&str>,
    ) -> Result<Login> {
        let mut body = json!({"username": username, "password": password});
        if let Some(code) = totp {
            body["totp"] = json!(code);
        }
        let response = self
            .client
            .post(format!("{base}/v1/auth/login"))
            .json(&body)
            .send()
            .await
            .with_context(|| format!("signing in as {username} at {base}"))?;
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        match status {
            StatusCode::OK => Ok(Login::Token(
                answer["access_token"]
                    .as_str()
                    .context("a sign-in answer without access_token")?
                    .to_owned(),
            )),
            StatusCode::UNAUTHORIZED if answer["mfa_required"] == json!(true) && totp.is_none() => {
                Ok(Login::MfaRequired)
            }
            _ => bail!(
                "signing in as {username} at {base}: {status} {}",
                detail(&answer)
            ),
        }
    }

    /// Signs in, with the current TOTP code when the user has one. A code is good once, so a
    /// sign-in refused in the step just used is tried again in the next.
    pub async fn sign_in(
        &self,
        base: &str,
        username: &str,
        password: &str,
        totp: Option<&TotpSecret>,
    ) -> Result<Session> {
        let token = match self.login(base, username, password, None).await? {
            Login::Token(token) => token,
            Login::MfaRequired => {
                let secret = totp.with_context(|| {
                    format!("{username} has multi-factor sign-in on, and the demo does not hold its TOTP secret")
                })?;
                match self
                    .login(base, username, password, Some(&current_code(secret)))
                    .await
                {
                    Ok(Login::Token(token)) => token,
                    _ => {
                        tokio::time::sleep(Duration::from_secs(
                            30 - platform::token::unix_now() as u64 % 30 + 1,
                        ))
                        .await;
                        match self
                            .login(base, username, password, Some(&current_code(secret)))
                            .await?
                        {
                            Login::Token(token) => token,
                            Login::MfaRequired => bail!("{username}: the TOTP code was refused"),
                        }
                    }
                }
            }
        };
        Ok(Session {
            base: base.to_owned(),
            token,
            who: username.to_owned(),
        })
    }

    /// Turns multi-factor sign-in on for the signed-in user, as an authenticator app would:
    /// takes the secret from the `otpauth://` URI and confirms with its first code.
    pub async fn enrol_mfa(&self, session: &Session) -> Result<(String, TotpSecret)> {
        let answer = self
            .post(session, "/v1/auth/mfa/enroll", &json!({}))
            .await?;
        let (status, answer) = answer;
        if status != StatusCode::OK {
            bail!(
                "{}: MFA enrolment: {status} {}",
                session.who,
                detail(&answer)
            );
        }
        let uri = answer["otpauth_uri"]
            .as_str()
            .context("an enrolment answer without otpauth_uri")?
            .to_owned();
        let secret = secret_of_uri(&uri)?;
        let (status, answer) = self
            .post(
                session,
                "/v1/auth/mfa/confirm",
                &json!({"code": current_code(&secret)}),
            )
            .await?;
        if status != StatusCode::NO_CONTENT {
            bail!(
                "{}: MFA confirmation: {status} {}",
                session.who,
                detail(&answer)
            );
        }
        Ok((uri, secret))
    }

    /// Sends a command; answers its recorded events (201, or 200 for a repeat).
    pub async fn command(&self, session: &Session, kind: &str, mut fields: Value) -> Result<Value> {
        fields["command_id"] = json!(uuid::Uuid::now_v7());
        fields["type"] = json!(kind);
        let (status, answer) = self.post(session, "/v1/commands", &fields).await?;
        if !matches!(status, StatusCode::CREATED | StatusCode::OK) {
            bail!(
                "{} sent {kind} to {}: {status} {}",
                session.who,
                session.base,
                detail(&answer)
            );
        }
        Ok(answer)
    }

    /// Sends a command until the service knows what it names: a central service learns of an
    /// edge's events only once they are synced and read.
    pub async fn command_when_known(
        &self,
        session: &Session,
        kind: &str,
        fields: Value,
        within: Duration,
    ) -> Result<Value> {
        let deadline = Instant::now() + within;
        loop {
            match self.command(session, kind, fields.clone()).await {
                Ok(answer) => return Ok(answer),
                Err(e) if e.to_string().contains("404") && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    pub async fn post(
        &self,
        session: &Session,
        path: &str,
        body: &Value,
    ) -> Result<(StatusCode, Value)> {
        let response = self
            .client
            .post(format!("{}{path}", session.base))
            .bearer_auth(&session.token)
            .json(body)
            .send()
            .await
            .with_context(|| format!("POST {}{path}", session.base))?;
        let status = response.status();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    pub async fn get(&self, session: &Session, path: &str) -> Result<(StatusCode, Value)> {
        let response = self
            .client
            .get(format!("{}{path}", session.base))
            .bearer_auth(&session.token)
            .send()
            .await
            .with_context(|| format!("GET {}{path}", session.base))?;
        let status = response.status();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    /// GET that must succeed: its answer, or an error naming the status and the problem.
    pub async fn read(&self, session: &Session, path: &str) -> Result<Value> {
        let (status, answer) = self.get(session, path).await?;
        if !status.is_success() {
            bail!("GET {}{path}: {status} {}", session.base, detail(&answer));
        }
        Ok(answer)
    }

    /// GET until `until` holds of a 200 answer, or fails after `within`.
    pub async fn get_until(
        &self,
        session: &Session,
        path: &str,
        within: Duration,
        until: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let deadline = Instant::now() + within;
        loop {
            let (status, answer) = self.get(session, path).await?;
            if status == StatusCode::OK && until(&answer) {
                return Ok(answer);
            }
            if Instant::now() > deadline {
                bail!(
                    "GET {}{path}: still {status} {} after {within:?}",
                    session.base,
                    short(&answer)
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// The problem+json detail of an error answer, or the answer itself.
pub fn detail(answer: &Value) -> String {
    answer["detail"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| short(answer))
}

fn short(answer: &Value) -> String {
    let text = answer.to_string();
    if text.len() > 300 {
        format!("{}…", &text[..300])
    } else {
        text
    }
}

pub fn current_code(secret: &TotpSecret) -> String {
    platform::totp::format_code(platform::totp::code_at(
        secret,
        platform::token::unix_now() as u64,
    ))
}

/// The secret of an `otpauth://totp/...?secret=BASE32&...` URI.
pub fn secret_of_uri(uri: &str) -> Result<TotpSecret> {
    let query = uri
        .split_once('?')
        .map(|(_, q)| q)
        .context("an otpauth URI without parameters")?;
    let encoded = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("secret="))
        .context("an otpauth URI without a secret")?;
    let bytes = base32_decode(encoded).context("an otpauth secret that is not base32")?;
    let bytes: [u8; 20] = bytes
        .try_into()
        .map_err(|b: Vec<u8>| anyhow::anyhow!("an otpauth secret of {} bytes, not 20", b.len()))?;
    Ok(TotpSecret::from_bytes(bytes))
}

/// RFC 4648 base32 (the alphabet A–Z, 2–7), padding and case ignored.
fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let mut bits: u64 = 0;
    let mut held = 0u32;
    let mut out = Vec::new();
    for c in text.trim_end_matches('=').chars() {
        let value = match c.to_ascii_uppercase() {
            c @ 'A'..='Z' => c as u64 - 'A' as u64,
            c @ '2'..='7' => c as u64 - '2' as u64 + 26,
            _ => return None,
        };
        bits = (bits << 5) | value;
        held += 5;
        if held >= 8 {
            held -= 8;
            out.push((bits >> held) as u8);
            bits &= (1 << held) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_of_an_otpauth_uri_is_what_was_encoded() {
        let secret = TotpSecret::from_bytes(*b"12345678901234567890");
        let uri = platform::totp::otpauth_uri(&secret, "HMS", "admin");
        let read = secret_of_uri(&uri).unwrap();
        assert_eq!(read.base32(), secret.base32());
        assert_eq!(
            platform::totp::code_at(&read, 59),
            287_082,
            "RFC 6238's first SHA-1 vector"
        );
        assert!(secret_of_uri("otpauth://totp/x?secret=not*base32").is_err());
        assert!(
            secret_of_uri("otpauth://totp/x?secret=GEZDGNBV").is_err(),
            "5 bytes"
        );
    }
}
