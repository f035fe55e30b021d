//! The addresses `--configure-addresses` adds: those the cloud's metadata assigns an ENI and the
//! interface lacks. Each is added as a host address (`/32`, `/128`) with `noprefixroute` (and
//! `nodad` for IPv6: the cloud assigned it to this ENI alone, and a tentative address would be
//! unusable for a second or more), so it changes no route of anyone's: the subnet's route is
//! already there through the interface's primary address, and enipin's table routes replies
//! from it. Each carries enipin's protocol (`IFA_PROTO` 229, kernels >= 5.18), which is how
//! enipin finds exactly the addresses it added: removed when metadata stops listing them, and
//! on detach; never anyone else's.

use serde::Serialize;

use crate::model::{Cidr, RTPROT_ENIPIN};

/// One address on one interface.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Address {
    pub(crate) ifindex: u32,
    /// The interface's name, for the plan's text.
    pub(crate) dev: String,
    #[serde(serialize_with = "crate::model::cidr_text::one")]
    pub(crate) cidr: Cidr,
}

impl Address {
    /// `ip address` arguments.
    pub(crate) fn ip_args(&self) -> String {
        let nodad = if self.cidr.is_ipv6() { " nodad" } else { "" };
        format!(
            "{} dev {} noprefixroute{nodad} proto {RTPROT_ENIPIN}",
            self.cidr, self.dev
        )
    }
}
