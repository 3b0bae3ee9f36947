"""Threat mitigation: the account's custom cleanup pattern catalogue, mitigation tasks to
products, and the forensic data they sent back (provider operators change; others read)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tmsp.events.v1 import status_pb2
from tmsp.reporter.v1 import reporter_pb2 as pb
from tmsp_client.arguments import (
    Subparsers,
    add_account,
    add_limit,
    add_output,
    command,
    command_group,
    key_value,
    paged,
)
from tmsp_client.context import Context, UsageError
from tmsp_client.output import enum_label, joined, size, ts, yes_no
from tmsp_client.transfer import Download, DownloadError, safe_name

TASK_KINDS = {
    "cleanup": status_pb2.MITIGATION_TASK_KIND_CUSTOM_CLEANUP_PATTERN,
    "forensic": status_pb2.MITIGATION_TASK_KIND_FORENSIC_DATA_REQUEST,
}
MAX_PATTERN_BYTES = 512 * 1024


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    verbs = command_group(sub, "patterns", "the account's custom cleanup patterns")
    p = command(verbs, common, "list", "the catalogue, by name", patterns_list)
    add_account(p)
    p = command(verbs, common, "put", "add or replace a pattern (operators)", patterns_put)
    p.add_argument("name", metavar="NAME")
    p.add_argument("file", metavar="FILE", help="the pattern file (at most 512 KiB; '-': stdin)")
    p.add_argument("--description", default="")
    p.add_argument(
        "--expected-version",
        type=int,
        help="refuse unless the stored pattern has this version (0: only if new)",
    )
    add_account(p)
    p = command(verbs, common, "delete", "remove a pattern (operators)", patterns_delete)
    p.add_argument("name", metavar="NAME")
    add_account(p)

    verbs = command_group(sub, "tasks", "threat mitigation tasks")
    p = command(verbs, common, "list", "newest first, with acknowledgements", tasks_list)
    add_account(p)
    p.add_argument("--product", default="", metavar="ID", help="only this product's")
    add_limit(p)
    p = command(verbs, common, "create", "issue a task to a product (operators)", tasks_create)
    add_account(p)
    p.add_argument("--product", required=True, metavar="ID")
    p.add_argument("--kind", choices=list(TASK_KINDS), required=True)
    p.add_argument("--pattern", metavar="NAME", help="cleanup: the catalogue's pattern")
    p.add_argument(
        "--param",
        type=key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a task parameter (repeatable)",
    )

    verbs = command_group(sub, "forensics", "forensic data the products sent")
    p = command(verbs, common, "list", "newest first", forensics_list)
    add_account(p)
    p.add_argument("--task", default="", metavar="ID", help="only files for this task")
    add_limit(p)
    p = command(
        verbs, common, "download", "one file, its SHA-256 checked (operators)", forensics_download
    )
    p.add_argument("upload_id", metavar="UPLOAD_ID")
    add_account(p)
    add_output(p, "the file name the product gave")


def patterns_list(ctx: Context) -> None:
    r = ctx.portal.ListCleanupPatterns(pb.ListCleanupPatternsRequest(account_id=ctx.account))
    ctx.out.table(
        r,
        ["pattern", "version", "size", "sha-256", "updated", "description"],
        [
            (
                p.name,
                p.version,
                size(p.size),
                p.content_sha256[:16],
                ts(p.updated_at),
                p.description,
            )
            for p in r.patterns
        ],
        empty="(no cleanup patterns)",
    )


def _read_pattern(path: str) -> bytes:
    if path == "-":
        content = sys.stdin.buffer.read(MAX_PATTERN_BYTES + 1)
    else:
        with Path(path).open("rb") as fh:
            content = fh.read(MAX_PATTERN_BYTES + 1)
    if not content:
        raise UsageError(f"{path} is empty")
    if len(content) > MAX_PATTERN_BYTES:
        raise UsageError(f"{path} is larger than 512 KiB")
    return content


def patterns_put(ctx: Context) -> None:
    a = ctx.args
    request = pb.PutCleanupPatternRequest(
        account_id=ctx.account,
        name=a.name,
        description=a.description,
        content=_read_pattern(a.file),
    )
    if a.expected_version is not None:
        request.expected_version = a.expected_version
    p = ctx.portal.PutCleanupPattern(request).pattern
    text = f"pattern {p.name}: version {p.version}, {size(p.size)}, sha-256 {p.content_sha256}"
    ctx.out.result(pb.PutCleanupPatternResponse(pattern=p), text)


def patterns_delete(ctx: Context) -> None:
    r = ctx.portal.DeleteCleanupPattern(
        pb.DeleteCleanupPatternRequest(account_id=ctx.account, name=ctx.args.name)
    )
    ctx.out.result(r, f"pattern {ctx.args.name} deleted")


def tasks_list(ctx: Context) -> None:
    request = pb.ListMitigationTasksRequest(account_id=ctx.account, product_id=ctx.args.product)
    r = paged(ctx.portal.ListMitigationTasks, request, "tasks", ctx.args.limit)
    ctx.out.table(
        r,
        ["task", "kind", "product", "created", "acknowledged", "parameters", "forensic data"],
        [
            (
                s.task.task_id,
                enum_label(status_pb2.MitigationTaskKind, s.task.kind),
                s.task.product_id,
                ts(s.task.created_at),
                ts(s.acknowledged_at, present=s.HasField("acknowledged_at")),
                joined(f"{k}={v}" for k, v in sorted(s.task.parameters.items())),
                joined(s.forensic_upload_ids),
            )
            for s in r.tasks
        ],
    )


def tasks_create(ctx: Context) -> None:
    a = ctx.args
    parameters = dict(a.param)
    if a.pattern:
        parameters["pattern_name"] = a.pattern
    if a.kind == "cleanup" and not parameters.get("pattern_name"):
        raise UsageError("tasks create --kind cleanup needs --pattern NAME")
    task = ctx.portal.CreateMitigationTask(
        pb.CreateMitigationTaskRequest(
            account_id=ctx.account,
            product_id=a.product,
            kind=TASK_KINDS[a.kind],
            parameters=parameters,
        )
    ).task
    text = (
        f"task {task.task_id}: {enum_label(status_pb2.MitigationTaskKind, task.kind)} for "
        f"product {task.product_id}; the product gets it with its next heartbeat"
    )
    ctx.out.result(pb.CreateMitigationTaskResponse(task=task), text)


def forensics_list(ctx: Context) -> None:
    request = pb.ListForensicDataRequest(account_id=ctx.account, task_id=ctx.args.task)
    r = paged(ctx.portal.ListForensicData, request, "files", ctx.args.limit)
    ctx.out.table(
        r,
        ["upload", "file", "size", "complete", "received", "task", "product"],
        [
            (
                f.upload_id,
                f.file_name,
                size(f.size),
                yes_no(f.complete),
                ts(f.received_at),
                f.task_id,
                f.product_id,
            )
            for f in r.files
        ],
    )


def forensics_download(ctx: Context) -> None:
    stream = ctx.portal.DownloadForensicData(
        pb.DownloadForensicDataRequest(account_id=ctx.account, upload_id=ctx.args.upload_id)
    )
    expected = ""
    with Download("forensic data", ctx.args.output, private=True, err=ctx.out.err) as download:
        for piece in stream:
            if piece.HasField("file"):
                expected = piece.file.content_sha256
                download.start(safe_name(piece.file.file_name, f"{piece.file.upload_id}.bin"))
            download.write(piece.chunk)
        if not expected:
            raise DownloadError("the portal sent no SHA-256 for this file; nothing saved")
        download.finish(expected)
