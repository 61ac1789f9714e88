// A shop's session handling as any Express app writes it: express-session with connect-redis
// on node-redis, pointed at one steadfast node's Redis port (REDIS_URL). Nothing here knows
// about steadfast. Routes: POST /login?user=, POST /basket?item=, GET /basket, POST /logout.
import express from "express"
import session from "express-session"
import {RedisStore} from "connect-redis"
import {createClient} from "redis"

const client = createClient({url: process.env.REDIS_URL})
client.on("error", (e) => console.error("redis client:", e.message))
await client.connect()

const app = express()
app.use(
  session({
    store: new RedisStore({client, prefix: "shop:"}),
    secret: "test secret",
    resave: false,
    saveUninitialized: false,
    cookie: {maxAge: 3600 * 1000},
  }),
)

const fail = (res, e) => res.status(500).json({error: String(e)})

app.post("/login", (req, res) => {
  req.session.regenerate((e) => {
    if (e) return fail(res, e)
    req.session.user = req.query.user
    req.session.basket = []
    req.session.save((e) => (e ? fail(res, e) : res.json({user: req.session.user})))
  })
})

app.post("/basket", (req, res) => {
  if (!req.session.user) return res.status(401).json({error: "not logged in"})
  req.session.basket.push(req.query.item)
  req.session.save((e) => (e ? fail(res, e) : res.json({basket: req.session.basket})))
})

app.get("/basket", (req, res) => {
  res.json({user: req.session.user ?? null, basket: req.session.basket ?? []})
})

app.post("/logout", (req, res) => {
  req.session.destroy((e) => (e ? fail(res, e) : res.json({user: null})))
})

const port = Number(process.env.PORT)
app.listen(port, "127.0.0.1", () => console.log(`express app on ${port} -> ${process.env.REDIS_URL}`))
