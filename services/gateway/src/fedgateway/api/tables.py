"""/api/v1/tables: upload a CSV table into this party's TableStore, list and inspect tables.

An upload is a command to the party's data service, which its workers serve (fedworker.data):
a worker parses the CSV (every bad row reported with its line) and stores it in the party's
TableStore, where the workers read it. A file that fits in one part
(`UPLOAD_PART_BYTES`, 4 MiB) travels as one `table_upload` command; a larger one, up to
`MAX_UPLOAD_BYTES`, as an upload session: the file is read and checked (UTF-8, no NUL) part by
part, each part one `table_upload_part` command, then `table_upload_commit` parses the whole
(docs/api.md). No bus message is ever larger than a part, and the gateway holds one part at a
time (the multipart body itself is spooled to disk by the server before the route runs).

The file never leaves the party: only its catalogue entry (shape, columns, missing values,
digest, reads) is ever shown, to the party's own users.
"""

from __future__ import annotations

import codecs
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, HTTPException, UploadFile, status
from fedcontrol.client import UPLOAD_PART_BYTES, TableUpload
from starlette.concurrency import run_in_threadpool

from fedgateway.api.deps import (
    ROUTER_REFUSALS,
    UPLOAD_PART_TIMEOUT_S,
    UPLOAD_TIMEOUT_S,
    DataDep,
    TableNamePath,
    answering,
    refusals,
    require_token,
)
from fedgateway.api.models import TableCreate, TablePublic, TablesPublic

MAX_UPLOAD_BYTES = 256 << 20
"""Largest CSV accepted (it travels to the data service in parts of UPLOAD_PART_BYTES)."""

router = APIRouter(
    prefix="/tables",
    tags=["tables"],
    dependencies=[Depends(require_token)],
    responses=ROUTER_REFUSALS,
)


class CsvText:
    """An uploaded file read as UTF-8 text one block at a time, with the checks a whole-file
    read would make: size limit (413), valid UTF-8 (400 with the byte offset in the file), no
    NUL byte (400: a binary file). A leading BOM is dropped."""

    def __init__(self, file: UploadFile, block_bytes: int = UPLOAD_PART_BYTES) -> None:
        self._file = file
        self._block_bytes = block_bytes
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self.size = 0
        """Bytes read so far."""
        self.done = False
        self.blank = True
        """Nothing but whitespace so far."""
        self._text_seen = False

    async def read(self) -> str:
        """The next block's text ("" once done)."""
        if self.done:
            return ""
        block = await self._file.read(self._block_bytes)
        start = self.size
        self.size += len(block)
        if self.size > MAX_UPLOAD_BYTES:
            raise HTTPException(
                status.HTTP_413_CONTENT_TOO_LARGE,
                f"the file is larger than {MAX_UPLOAD_BYTES >> 20} MiB",
            )
        # A short read is the end of the (spooled) file; an exact fit finds b"" next time.
        self.done = len(block) < self._block_bytes
        # Bytes of a character cut by the block boundary wait in the decoder for the next block.
        pending = len(self._decoder.getstate()[0])
        try:
            text = self._decoder.decode(block, final=self.done)
        except UnicodeDecodeError as exc:
            raise HTTPException(
                status.HTTP_400_BAD_REQUEST,
                f"the file is not UTF-8 text (byte {start - pending + exc.start}): upload a CSV",
            ) from None
        if not self._text_seen and text:
            self._text_seen = True
            text = text.removeprefix("\ufeff")  # a BOM (Excel writes one) is not a column name
        if "\x00" in text:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, "the file is binary, not a CSV")
        if self.blank and text.strip():
            self.blank = False
        return text


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=TablePublic,
    responses=refusals(
        400,
        409,
        413,
        s400="bad CSV: every bad row with its line number",
        s409="the table exists (upload with replace=true)",
        s413="the file is larger than the upload limit",
    ),
)
async def upload_table(
    data: DataDep,
    form: Annotated[TableCreate, Form()],
    file: Annotated[UploadFile, File(description="CSV: an id column, numeric features")],
) -> TablePublic:
    """Upload a CSV table (multipart/form-data: `file` plus the form fields)."""
    csv_text = CsvText(file)
    first = await csv_text.read()
    filename = (file.filename or "")[:256] or None
    if csv_text.done:
        if csv_text.blank:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, "the file is empty")
        with answering():
            result = await run_in_threadpool(
                data.table_upload,
                form.name,
                first,
                id_column=form.id_column,
                label_column=form.label_column,
                replace=form.replace,
                filename=filename,
                timeout=UPLOAD_TIMEOUT_S,
            )
        return TablePublic.model_validate(result)
    with answering():
        # Names the table, so an existing one is refused before any part travels.
        upload: TableUpload = await run_in_threadpool(
            data.table_upload_begin, name=form.name, replace=form.replace
        )
    try:
        text = first
        while text:
            with answering():
                await run_in_threadpool(upload.send, text, timeout=UPLOAD_PART_TIMEOUT_S)
            text = await csv_text.read()
        if csv_text.blank:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, "the file is empty")
        with answering():
            result = await run_in_threadpool(
                upload.commit,
                form.name,
                id_column=form.id_column,
                label_column=form.label_column,
                replace=form.replace,
                filename=filename,
                timeout=UPLOAD_TIMEOUT_S,
            )
    except BaseException:
        # Bad bytes half-way, a part that got no answer, a refused commit (which already
        # dropped the session): free the staging now rather than after the idle timeout.
        await run_in_threadpool(upload.abort)
        raise
    return TablePublic.model_validate(result)


@router.get("", response_model=TablesPublic)
def list_tables(data: DataDep) -> TablesPublic:
    """The tables uploaded at this party."""
    with answering():
        rows = data.table_list()
    return TablesPublic.model_validate({"data": rows, "count": len(rows)})


@router.get("/{name}", response_model=TablePublic, responses=refusals(404, s404="no table"))
def get_table(data: DataDep, name: TableNamePath) -> TablePublic:
    """One table's catalogue entry, with how often jobs read it."""
    with answering():
        return TablePublic.model_validate(data.table_get(name))
