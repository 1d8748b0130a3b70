"""/api/v1/tables: upload a CSV table into this party's TableStore, list and inspect tables.

An upload is a command to the party's scheduler (table_upload), which parses the CSV (every bad
row reported with its line) and stores it where the party's workers read it. The file never
leaves the party: only its catalogue entry (shape, columns, missing values, digest, reads) is
ever shown, to the party's own users.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, HTTPException, UploadFile, status
from starlette.concurrency import run_in_threadpool

from fedgateway.api.deps import (
    UPLOAD_TIMEOUT_S,
    SchedulerDep,
    TableNamePath,
    answering,
    require_token,
)
from fedgateway.api.models import TableCreate, TablePublic, TablesPublic

MAX_UPLOAD_BYTES = 256 << 20
"""Largest CSV accepted (the command carrying it is chunked on the bus, but held in memory)."""

router = APIRouter(prefix="/tables", tags=["tables"], dependencies=[Depends(require_token)])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=TablePublic,
    responses={
        400: {"description": "bad CSV: every bad row with its line number"},
        409: {"description": "the table exists (upload with replace=true)"},
        413: {"description": "the file is larger than the upload limit"},
    },
)
async def upload_table(
    scheduler: SchedulerDep,
    form: Annotated[TableCreate, Form()],
    file: Annotated[UploadFile, File(description="CSV: an id column, numeric features")],
) -> TablePublic:
    """Upload a CSV table (multipart/form-data: `file` plus the form fields)."""
    data = await file.read(MAX_UPLOAD_BYTES + 1)
    if len(data) > MAX_UPLOAD_BYTES:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"the file is larger than {MAX_UPLOAD_BYTES >> 20} MiB",
        )
    if not data.strip():
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "the file is empty")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            f"the file is not UTF-8 text (byte {exc.start}): upload a CSV",
        ) from None
    if "\x00" in text:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "the file is binary, not a CSV")
    with answering():
        result = await run_in_threadpool(
            scheduler.table_upload,
            form.name,
            text,
            id_column=form.id_column,
            label_column=form.label_column,
            replace=form.replace,
            filename=(file.filename or "")[:256] or None,
            timeout=UPLOAD_TIMEOUT_S,
        )
    return TablePublic.model_validate(result)


@router.get("", response_model=TablesPublic)
def list_tables(scheduler: SchedulerDep) -> TablesPublic:
    """The tables uploaded at this party."""
    with answering():
        rows = scheduler.table_list()
    return TablesPublic.model_validate({"data": rows, "count": len(rows)})


@router.get("/{name}", response_model=TablePublic, responses={404: {"description": "no table"}})
def get_table(scheduler: SchedulerDep, name: TableNamePath) -> TablePublic:
    """One table's catalogue entry, with how often jobs read it."""
    with answering():
        return TablePublic.model_validate(scheduler.table_get(name))
