// A JavaScript function for wasmhive (see docs/js.md):
//   await rt.deploy("hello", "examples/hello.js")
//   await rt.invoke("hello", b'{"name": "world"}')   # -> b'{"greeting":"hello world","calls":1,"total":1}'

let calls = 0; // module state: lives as long as this actor

async function handler(request, ctx) {
  calls += 1;
  const { name = "stranger" } = request.body.length ? request.json() : {};
  const total = ctx.kv.incr("greetings"); // shared by every actor of the function
  ctx.log("greeting", name);
  return { greeting: `hello ${name}`, calls, total };
}
