// A Centrifuge server for presence-bench's side-by-side fan-out run (`run centrifuge`):
// anonymous clients and any channel. A client that connects with the name "joiner" has join
// and leave messages on, so its subscribing and unsubscribing are a user joining and leaving
// a presence room, delivered to every subscriber; the watchers' own subscriptions send none.
// Built from Debian's packages by scripts/bench/centrifuge.sh; it prints the address it
// listens on, as presence-server does.
package main

import (
	"context"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/centrifugal/centrifuge"
)

func main() {
	node, err := centrifuge.New(centrifuge.DefaultConfig)
	if err != nil {
		log.Fatal(err)
	}
	var nextUser int64
	node.OnConnecting(func(ctx context.Context, e centrifuge.ConnectEvent) (centrifuge.ConnectReply, error) {
		user := strconv.FormatInt(atomic.AddInt64(&nextUser, 1), 10)
		if e.Name == "joiner" {
			user = "joiner-" + user
		}
		return centrifuge.ConnectReply{Credentials: &centrifuge.Credentials{UserID: user}}, nil
	})
	node.OnConnect(func(client *centrifuge.Client) {
		client.OnSubscribe(func(e centrifuge.SubscribeEvent, cb centrifuge.SubscribeCallback) {
			joiner := strings.HasPrefix(client.UserID(), "joiner-")
			cb(centrifuge.SubscribeReply{Options: centrifuge.SubscribeOptions{Presence: true, JoinLeave: joiner}}, nil)
		})
	})
	if err := node.Run(); err != nil {
		log.Fatal(err)
	}
	http.Handle("/connection/websocket", centrifuge.NewWebsocketHandler(node, centrifuge.WebsocketConfig{}))
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Fprintf(os.Stdout, "centrifuge listening on %s\n", listener.Addr())
	log.Fatal(http.Serve(listener, nil))
}
