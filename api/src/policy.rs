//! Who may do what: the one home of the permission matrix (docs/accounts.md, "Permission
//! matrix"). Handlers ask [`may`] with the caller's role and the action; channel visibility
//! is [`sees_channel`]. Nothing here crosses orgs: a resource of another org is never found
//! (404) before these rules are asked.

use threadspace_protocol::frames::ChannelKind;

/// An org role, lowest first. `Bot` is the role of bots (docs/api.md, "Integrations"): they
/// act only through their credentials, so no action of the matrix is theirs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Role {
    Bot,
    Guest,
    Member,
    Admin,
    Owner,
}

impl Role {
    pub(crate) fn parse(role: &str) -> Option<Self> {
        Some(match role {
            "owner" => Self::Owner,
            "admin" => Self::Admin,
            "member" => Self::Member,
            "guest" => Self::Guest,
            "bot" => Self::Bot,
            _ => return None,
        })
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Owner => "owner",
            Self::Admin => "admin",
            Self::Member => "member",
            Self::Guest => "guest",
            Self::Bot => "bot",
        }
    }
}

/// An action on the org, with the role of the person it targets where that matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Invite someone with this role.
    Invite(Role),
    /// Change someone's role from `from` to `to` (never one's own).
    ChangeRole { from: Role, to: Role },
    /// Deactivate or reactivate someone with this role (never oneself).
    SetActive(Role),
    /// Set or clear the org's sign-up domain.
    SetSignupDomain,
    /// Join a public channel.
    JoinPublic,
    /// Add someone else to a channel the caller can see.
    AddMember { caller_is_member: bool },
    /// Remove someone else from a channel.
    RemoveMember,
    /// List and search the org's people.
    SearchPeople,
    /// Read the org's audit log.
    ReadAudit,
    /// Create a public or private channel.
    CreateChannel,
    /// Open a DM or group DM; `with_strangers` when some of the others share no channel with
    /// the caller.
    OpenConversation { with_strangers: bool },
    /// List the org's public channels.
    BrowseChannels,
    /// Create bots, issue and revoke their credentials, list them.
    ManageBots,
    /// Rename a channel, set its topic or purpose, archive or unarchive it;
    /// `created_by_caller` when the caller created it.
    ManageChannel { created_by_caller: bool },
    /// Ask for an export of one's own data.
    ExportOwnData,
    /// Ask for an export of the org's data.
    ExportOrg,
    /// Erase a person (never oneself).
    Erase,
    /// Read the org's erasure policy.
    ReadErasurePolicy,
    /// Set the org's erasure policy.
    SetErasurePolicy,
}

/// Whether a caller with `role` may do `action` to a person; `on_self` when that person is the
/// caller: nobody changes their own role or deactivates themselves (an org keeps its owners).
pub(crate) fn may_to(role: Role, action: Action, on_self: bool) -> bool {
    match action {
        Action::ChangeRole { .. } | Action::SetActive(_) | Action::Erase if on_self => false,
        _ => may(role, action),
    }
}

/// Whether `role` may do `action` (docs/accounts.md, "Permission matrix").
pub(crate) fn may(role: Role, action: Action) -> bool {
    use Role::{Admin, Bot, Guest, Member, Owner};
    if role == Bot {
        return false;
    }
    match action {
        // Nobody invites a bot or makes a person a bot, or a bot a person: bots are created
        // as bots (ManageBots) and stay bots.
        Action::Invite(Bot) | Action::ChangeRole { from: Bot, .. } | Action::ChangeRole { to: Bot, .. } => {
            false
        }
        // Owners invite anyone; admins invite members and guests.
        Action::Invite(invited) => match role {
            Owner => true,
            Admin => invited <= Member,
            Member | Guest | Bot => false,
        },
        // Owners change anyone's role; admins move people between member and guest only.
        Action::ChangeRole { from, to } => match role {
            Owner => true,
            Admin => from <= Member && to <= Member,
            Member | Guest | Bot => false,
        },
        // Owners (de)activate anyone else; admins members and guests.
        Action::SetActive(target) => match role {
            Owner => true,
            Admin => target <= Member,
            Member | Guest | Bot => false,
        },
        Action::SetSignupDomain => role == Owner,
        // Guests see only the channels they were added to.
        Action::JoinPublic => role >= Member,
        Action::AddMember { caller_is_member } => role >= Admin || (role == Member && caller_is_member),
        Action::RemoveMember => role >= Admin,
        Action::SearchPeople => role >= Member,
        Action::ReadAudit | Action::ManageBots => role >= Admin,
        Action::CreateChannel | Action::BrowseChannels => role >= Member,
        // Guests talk only with the people of their channels.
        Action::OpenConversation { with_strangers } => role >= Member || !with_strangers,
        // Everyone but a bot has their own data (a bot's is its owners' to read).
        Action::ExportOwnData => role >= Guest,
        // Erasure is irreversible: owners only, on anyone else (bots included).
        Action::ExportOrg | Action::Erase | Action::SetErasurePolicy => role == Owner,
        Action::ReadErasurePolicy => role >= Admin,
        // Members look after the channels they created; owners and admins after every one.
        Action::ManageChannel { created_by_caller } => role >= Admin || (role == Member && created_by_caller),
    }
}

/// Whether a caller with `role` sees an export or erasure job: whoever asked for it, and the
/// org's owners (who ask for erasures and org exports). Anyone else is answered 404.
pub(crate) fn sees_job(role: Role, is_requester: bool) -> bool {
    is_requester || role == Role::Owner
}

/// Whether a caller with `role` sees a person of their own org: everyone sees themselves;
/// owners, admins and members see everyone; guests only the people they share a channel with.
/// A person the caller does not see is answered 404, like another org's.
pub(crate) fn sees_person(role: Role, is_self: bool, shares_a_channel: bool) -> bool {
    is_self || role >= Role::Member || shares_a_channel
}

/// Whether a caller with `role` sees a channel of `kind` in their own org: members of a
/// channel always do; otherwise owners, admins and members see public channels, and nobody
/// sees a private channel, DM or group DM they are not in. Guests see only channels they were
/// added to. A channel the caller does not see is answered 404, like another org's.
pub(crate) fn sees_channel(role: Role, kind: ChannelKind, is_member: bool) -> bool {
    is_member || (kind == ChannelKind::Public && role >= Role::Member)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVERY_ACTION: [Action; 14] = [
        Action::Invite(Role::Guest),
        Action::ChangeRole { from: Role::Guest, to: Role::Member },
        Action::SetActive(Role::Guest),
        Action::JoinPublic,
        Action::SearchPeople,
        Action::CreateChannel,
        Action::OpenConversation { with_strangers: false },
        Action::ManageBots,
        Action::ExportOwnData,
        Action::ExportOrg,
        Action::Erase,
        Action::SetErasurePolicy,
        Action::ReadErasurePolicy,
        Action::ManageChannel { created_by_caller: true },
    ];

    #[test]
    fn a_bot_may_do_nothing_of_the_matrix() {
        for action in EVERY_ACTION {
            assert!(!may(Role::Bot, action), "a bot may not {action:?}");
        }
    }

    #[test]
    fn nobody_makes_a_bot_or_unmakes_one() {
        for role in [Role::Owner, Role::Admin] {
            assert!(!may(role, Action::Invite(Role::Bot)), "{role:?} invites a bot");
            assert!(
                !may(role, Action::ChangeRole { from: Role::Bot, to: Role::Member }),
                "{role:?}: bot → member"
            );
            assert!(
                !may(role, Action::ChangeRole { from: Role::Member, to: Role::Bot }),
                "{role:?}: member → bot"
            );
            assert!(may(role, Action::SetActive(Role::Bot)), "{role:?} may deactivate a bot");
            assert!(may(role, Action::ManageBots));
        }
        assert!(!may(Role::Member, Action::ManageBots));
        assert!(!may(Role::Guest, Action::ManageBots));
    }

    #[test]
    fn roles_parse_and_print_alike() {
        for role in [Role::Bot, Role::Guest, Role::Member, Role::Admin, Role::Owner] {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("root"), None);
    }
}
