//! `deliver`: hands a message to a backend through the outbox. The node
//! evaluates the message; the engine writes it to the outbox in the same
//! commit as the node's result, and the outbox dispatcher sends it.

use std::time::Duration;

use rhai::Scope;
use serde_json::Value;

use crate::node::{NodeError, Outcome};
use crate::reader::Options;
use crate::script::{Expr, Template};

#[derive(Debug)]
pub struct Deliver {
    pub target: Target,
    /// The message body (an expression).
    pub payload: Expr,
}

/// Where the message goes, as configured.
#[derive(Debug)]
pub enum Target {
    /// `target: amqp`
    Amqp {
        /// The exchange (a template); declared durable `topic` unless it exists.
        exchange: Template,
        /// The routing key (a template).
        routing_key: Template,
        /// `payload` (default): the body is the payload as JSON;
        /// `cloudevents`: a CloudEvents 1.0 structured JSON envelope.
        format: Format,
    },
    /// `target: http`
    Http {
        /// The URL to POST to (a template).
        url: Template,
        /// The environment variable that holds the Standard Webhooks secret
        /// (`whsec_…`) the request is signed with.
        secret_env: String,
        /// Where `secret_env` is written, for load errors.
        secret_env_pos: crate::Pos,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Payload,
    CloudEvents,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Payload => "payload",
            Self::CloudEvents => "cloudevents",
        }
    }
}

/// A message ready for the outbox.
#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    pub target: RenderedTarget,
    pub payload: Value,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RenderedTarget {
    Amqp {
        exchange: String,
        routing_key: String,
        format: Format,
    },
    Http {
        url: String,
        secret_env: String,
    },
}

impl Deliver {
    pub fn build(o: &mut Options, names: &[&str]) -> Option<Self> {
        let target = o.required_str("target");
        let payload = o.required_expr("payload", names);
        let target = match target? {
            ("amqp", _) => {
                let exchange = o.required_template("exchange", names);
                let routing_key = o.required_template("routing_key", names);
                let format = match o.str("format") {
                    None | Some(("payload", _)) => Format::Payload,
                    Some(("cloudevents", _)) => Format::CloudEvents,
                    Some((other, pos)) => {
                        o.error(
                            pos,
                            format!("`format` must be `payload` or `cloudevents`, not `{other}`"),
                        );
                        Format::Payload
                    }
                };
                if let (Some(exchange), Some(pos)) = (&exchange, o.key_pos("exchange"))
                    && exchange.as_literal().is_some_and(str::is_empty)
                {
                    o.error(pos, "`exchange` is empty; name the exchange to publish to");
                }
                Target::Amqp {
                    exchange: exchange?,
                    routing_key: routing_key?,
                    format,
                }
            }
            ("http", _) => {
                let url = o.required_template("url", names);
                let (secret_env, secret_env_pos) = o
                    .required_str("secret_env")
                    .map(|(s, pos)| (s.to_owned(), pos))?;
                Target::Http {
                    url: url?,
                    secret_env,
                    secret_env_pos,
                }
            }
            (other, pos) => {
                o.error(
                    pos,
                    format!("`target` must be `amqp` or `http`, not `{other}`"),
                );
                return None;
            }
        };
        Some(Self {
            target,
            payload: payload?,
        })
    }

    pub fn run(
        &self,
        scope: &mut Scope<'static>,
        timeout: Option<Duration>,
    ) -> Result<Outcome, NodeError> {
        let target = match &self.target {
            Target::Amqp {
                exchange,
                routing_key,
                format,
            } => RenderedTarget::Amqp {
                exchange: exchange.render(scope, timeout)?,
                routing_key: routing_key.render(scope, timeout)?,
                format: *format,
            },
            Target::Http {
                url, secret_env, ..
            } => RenderedTarget::Http {
                url: url.render(scope, timeout)?,
                secret_env: secret_env.clone(),
            },
        };
        let payload = super::eval_json(&self.payload, scope, timeout)?;
        Ok(Outcome::Deliver(Delivery { target, payload }))
    }
}
