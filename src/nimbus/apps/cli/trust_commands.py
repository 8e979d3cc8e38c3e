"""The CLI's cross-signing and trust commands: `identity`, `devices --user` / `devices sign`,
`trust acknowledge|verify|block|unblock|show`, and `config sharing-mode`.

Each is `async def cmd(args, printer) -> exit code`, like nimbus.apps.cli.commands. They go through
nimbus.client.Client (spec: "Cross-signing",
https://spec.matrix.org/v1.12/client-server-api/#cross-signing). Commands that show trust sync once
first, so device-list changes (a device newly signed, an identity replaced) are taken into account.
Failures are NimbusError (exit 1, one line); nothing secret is printed (public keys only).
"""

from __future__ import annotations

import argparse

from nimbus.apps.cli import commands
from nimbus.apps.cli.output import EXIT_OK, Printer
from nimbus.apps.cli.trust_output import (
    NOT_SIGNED_HINT,
    device_json,
    device_text,
    grouped,
    normalized_key,
    own_identity_json,
    own_identity_text,
    user_identity_json,
    user_identity_text,
)
from nimbus.client.client import Client
from nimbus.types.errors import NimbusError

SHARING_MODES_HELP = (
    "who gets the room keys of the messages you send. "
    "legacy: every device of every member (except devices you blocked). "
    "cross_signed (the default, the spec's current recommendation, MSC4153): only devices their owner "
    "cross-signed; the others get m.room_key.withheld 'm.unverified', and messages sent from such "
    "devices are hidden"
)


async def synced(client: Client, out: Printer) -> None:
    """One sync, then the identity changes it revealed, as warnings (stderr, so --json stays clean)."""
    await client.sync_once(0)
    commands.warn_identity_changes(client, out)


# --- identity -------------------------------------------------------------------------------------


async def identity(args: argparse.Namespace, out: Printer) -> int:
    async with commands.opened(args) as client:
        await synced(client, out)
        ident = await client.identity()
        out.result(own_identity_json(ident), own_identity_text(ident))
    return EXIT_OK


# --- devices --------------------------------------------------------------------------------------


async def devices(args: argparse.Namespace, out: Printer) -> int:
    """`devices`: your devices (commands.devices), `--user USER`'s with trust, or `sign DEVICE_ID`."""
    if args.action == "sign":
        return await sign_device(args, out)
    if args.user and args.action == "list":
        return await user_devices(args, out)
    return await commands.devices(args, out)


async def _show_user(client: Client, user: str, out: Printer, *, header_in_json: bool) -> None:
    ident = await client.user_identity(user)
    infos = await client.user_devices(user)
    if header_in_json or not out.as_json:
        out.result(user_identity_json(ident), user_identity_text(ident))
    for d in infos:
        out.result(device_json(d, ident), device_text(d))
    for device_id, refused in sorted((await client.crypto.machine.rejected_devices(user)).items()):
        out.result(
            {"type": "refused_device", "user_id": user, "device_id": device_id, "reason": refused.reason},
            f"{user} {device_id}  REFUSED: {refused.reason} (gets no room keys)",
        )


async def user_devices(args: argparse.Namespace, out: Printer) -> int:
    """`devices --user USER`: the identity header (people only; in JSON each device object carries
    the identity state, so the objects stay one per device as before), then each device."""
    async with commands.opened(args) as client:
        await synced(client, out)
        await _show_user(client, args.user, out, header_in_json=False)
    return EXIT_OK


async def sign_device(args: argparse.Namespace, out: Printer) -> int:
    """Vouch for another device of ours with our self-signing key (spec: POST /keys/signatures/upload)."""
    if not args.device:
        raise NimbusError("which device? 'nimbus devices sign DEVICE_ID' (see 'nimbus devices')")
    async with commands.opened(args) as client:
        await synced(client, out)
        me = await client.identity()
        if me.master_key is None:
            raise NimbusError("you have no cross-signing identity yet, so there is nothing to sign with")
        if not me.has_private_keys:
            raise NimbusError(
                "this device does not hold your cross-signing private keys: run 'nimbus devices sign "
                f"{args.device}' on the device that made your identity"
            )
        ours = {d.device_id: d for d in await client.user_devices(client.user_id)}
        if args.device not in ours:
            raise NimbusError(
                f"{args.device} is not one of your devices with published keys (see 'nimbus devices')"
            )
        await client.sign_own_device(args.device)
        out.result(
            {"type": "device_signed", "user_id": client.user_id, "device_id": args.device},
            f"signed device {args.device}: your other devices and contacts now see it as cross-signed",
        )
    return EXIT_OK


# --- trust ----------------------------------------------------------------------------------------


async def trust(args: argparse.Namespace, out: Printer) -> int:
    async with commands.opened(args) as client:
        await synced(client, out)
        user = args.user
        if args.trust_command == "show":
            await _show_user(client, user, out, header_in_json=True)
            return EXIT_OK
        if args.trust_command == "acknowledge":
            ident = await client.acknowledge_identity(user)
            out.result(
                {**user_identity_json(ident), "type": "identity_acknowledged"},
                f"acknowledged the identity of {user}: master key {grouped(ident.master_key)}",
            )
            return EXIT_OK
        if args.trust_command == "verify":
            wanted = normalized_key(args.master_key)
            current = await client.user_identity(user)
            if current.master_key is None:
                raise NimbusError(f"{user} has no cross-signing identity to verify")
            if wanted != current.master_key:
                raise NimbusError(
                    f"{grouped(wanted)} is not the current master key of {user}: nothing was verified "
                    "(compare again with them; 'nimbus trust show USER' shows the current key)"
                )
            ident = await client.verify_identity(user, wanted)
            out.result(
                {**user_identity_json(ident), "type": "identity_verified"},
                f"verified {user}: master key {grouped(ident.master_key)}",
            )
            return EXIT_OK
        blocked = args.trust_command == "block"
        known = {d.device_id for d in await client.user_devices(user)}
        if args.device not in known:
            raise NimbusError(f"{user} has no device {args.device} that this device knows of")
        await client.set_device_blocked(user, args.device, blocked)
        out.result(
            {"type": "device_blocked", "user_id": user, "device_id": args.device, "blocked": blocked},
            f"{'blocked' if blocked else 'unblocked'} {user} {args.device}"
            + (": it gets no room keys from now on" if blocked else ""),
        )
    return EXIT_OK


# --- config ---------------------------------------------------------------------------------------


async def config(args: argparse.Namespace, out: Printer) -> int:
    async with commands.opened(args) as client:
        if args.value is not None:
            await client.set_sharing_mode(args.value)
        mode = client.sharing_mode
        out.result(
            {"type": "config", "key": "sharing_mode", "value": mode, "changed": args.value is not None},
            f"sharing-mode {mode}" + (" (set)" if args.value is not None else ""),
        )
    return EXIT_OK


# --- registration ---------------------------------------------------------------------------------


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add `identity`, `trust` and `config` to the `nimbus` parser (`devices` stays in main)."""
    p = sub.add_parser(
        "identity",
        parents=[common],
        help="your cross-signing identity: keys, and whether this device is signed",
        description="Your user's cross-signing public keys (the fingerprint is the master key), whether "
        "this device holds the private keys and whether it is cross-signed. " + NOT_SIGNED_HINT + ".",
    )
    p.set_defaults(func=identity)

    t = sub.add_parser(
        "trust", help="other users' identities and devices: show, acknowledge, verify, block, unblock"
    )
    t_sub = t.add_subparsers(dest="trust_command", required=True, metavar="ACTION")

    def action(name: str, help: str) -> argparse.ArgumentParser:
        a: argparse.ArgumentParser = t_sub.add_parser(name, parents=[common], help=help, description=help)
        a.add_argument("user", help="user id (@name:server)")
        a.set_defaults(func=trust)
        return a

    action("show", "a user's identity (master key, pinned, verified, changed) and devices with trust")
    action("acknowledge", "accept a user's new identity (pin its master key); sending to them resumes")
    a = action(
        "verify",
        "mark a user's master key verified after comparing it with them out of band (refused if it "
        "is not their current key)",
    )
    a.add_argument("master_key", nargs="+", help="the master key, whole or in 4-character groups")
    for name, help in (
        ("block", "block a device: it gets no room keys from you (m.room_key.withheld m.blacklisted)"),
        ("unblock", "unblock a device"),
    ):
        action(name, help).add_argument("device", help="device id")

    c = sub.add_parser("config", help="settings of this profile")
    c_sub = c.add_subparsers(dest="config_key", required=True, metavar="SETTING")
    p = c_sub.add_parser(
        "sharing-mode",
        parents=[common],
        help="print or set the key-sharing policy (legacy | cross_signed)",
        description="Print (no value) or set the key-sharing policy: " + SHARING_MODES_HELP + ".",
    )
    p.add_argument("value", nargs="?", choices=["legacy", "cross_signed"])
    p.set_defaults(func=config)
