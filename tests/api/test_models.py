def test_models_lists_the_routes_the_key_may_use(client, make_key):
    _, key = make_key()
    data = client.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).json
    assert data["object"] == "list"
    assert [m["id"] for m in data["data"]] == ["deepseek-v4-flash", "deepseek-v4-pro"]
    assert all(m["object"] == "model" and m["owned_by"] and isinstance(m["created"], int) for m in data["data"])
    _, limited = make_key(models=["deepseek-v4-pro"])
    data = client.get("/v1/models", headers={"Authorization": f"Bearer {limited}"}).json
    assert [m["id"] for m in data["data"]] == ["deepseek-v4-pro"]


def test_retrieve_one_model(client, api_key):
    response = client.get("/v1/models/deepseek-v4-pro", headers={"Authorization": f"Bearer {api_key}"})
    assert response.json["id"] == "deepseek-v4-pro"
    response = client.get("/v1/models/nope", headers={"Authorization": f"Bearer {api_key}"})
    assert response.status_code == 404


def test_disabled_route_disappears_at_once(client, api_key):
    from app.routing import catalog

    catalog.set_route("deepseek-v4-pro", enabled=False)
    data = client.get("/v1/models", headers={"Authorization": f"Bearer {api_key}"}).json
    assert [m["id"] for m in data["data"]] == ["deepseek-v4-flash"]


def test_requests_carry_a_request_id(client, api_key):
    response = client.get("/v1/models", headers={"Authorization": f"Bearer {api_key}"})
    assert len(response.headers["x-request-id"]) == 32
