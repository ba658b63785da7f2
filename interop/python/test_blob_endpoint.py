"""ehub serve's Blob endpoint with SAS tokens made by the official Python storage client (the
copy vendored in azure-eventhub-checkpointstoreblob-aio, which sends x-ms-version 2019-07-07):
account SAS and container SAS work for what they grant, and are refused beyond it."""
import asyncio
import datetime

import pytest

from azure.core.exceptions import HttpResponseError
from azure.eventhub.extensions.checkpointstoreblobaio._vendor.storage.blob import (
    generate_account_sas, generate_blob_sas, generate_container_sas)
from azure.eventhub.extensions.checkpointstoreblobaio._vendor.storage.blob.aio import ContainerClient

DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def container_url(broker, sas):
    return f"http://127.0.0.1:{broker.blob_port}/devstoreaccount1/checkpoints?{sas}"


async def roundtrip(url, name):
    async with ContainerClient.from_container_url(url) as cc:
        await cc.upload_blob(name, b"", metadata={"ownerid": "py"})
        return [b.name async for b in cc.list_blobs(include=["metadata"])]


def test_sas_tokens_from_the_official_python_client_grant_what_they_sign(broker):
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
    account = generate_account_sas("devstoreaccount1", DEV_KEY, resource_types="sco", permission="rwdlc",
                                   expiry=later)
    assert "a" in asyncio.run(roundtrip(container_url(broker, account), "a"))
    container = generate_container_sas("devstoreaccount1", "checkpoints", account_key=DEV_KEY, permission="rwl",
                                       expiry=later)
    assert "b" in asyncio.run(roundtrip(container_url(broker, container), "b"))

    # A container SAS without List: writes work, the listing is refused with the service's code.
    no_list = generate_container_sas("devstoreaccount1", "checkpoints", account_key=DEV_KEY, permission="rw",
                                     expiry=later)
    with pytest.raises(HttpResponseError) as e:
        asyncio.run(roundtrip(container_url(broker, no_list), "c"))
    assert e.value.status_code == 403 and e.value.error_code == "AuthorizationPermissionMismatch"

    # An expired SAS and one for another container: refused, nothing written.
    expired = generate_container_sas("devstoreaccount1", "checkpoints", account_key=DEV_KEY, permission="rwl",
                                     expiry=datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc))
    other = generate_container_sas("devstoreaccount1", "other", account_key=DEV_KEY, permission="rwl", expiry=later)
    for sas in (expired, other):
        with pytest.raises(HttpResponseError) as e:
            asyncio.run(roundtrip(container_url(broker, sas), "d"))
        assert e.value.status_code == 403 and e.value.error_code == "AuthenticationFailed"

    # A blob SAS reads its blob and nothing else.
    blob = generate_blob_sas("devstoreaccount1", "checkpoints", "a", account_key=DEV_KEY, permission="r",
                             expiry=later)

    async def read(name):
        async with ContainerClient.from_container_url(container_url(broker, blob)) as cc:
            return await cc.get_blob_client(name).get_blob_properties()
    assert asyncio.run(read("a")).metadata == {"ownerid": "py"}
    with pytest.raises(HttpResponseError) as e:
        asyncio.run(read("b"))
    assert e.value.status_code == 403
    listed = asyncio.run(roundtrip(container_url(broker, account), "e"))
    assert "d" not in listed and "c" in listed
