def test_models_list_requires_key(client):
    response = client.get("/v1/models")
    assert response.status_code == 401
    assert response.json["error"]["code"] == "invalid_api_key"


def test_chat_completion_through_fake(client, api_key, fake):
    response = client.post(
        "/v1/chat/completions",
        json={"model": "deepseek-v4-flash", "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {api_key}"},
    )
    assert response.status_code == 200, response.data
    assert response.json["choices"][0]["message"]["content"].startswith("Hello")
