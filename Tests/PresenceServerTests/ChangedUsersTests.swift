import Testing

@testable import PresenceServer

/// What the user-watch hub hears of committed events, where they are committed: only watched
/// users, one wake-up for many events, and a wake-up again after a read that failed.
@Suite struct ChangedUsersTests {
    @Test func onlyWatchedUsersAreNotedAndTheHubWakesOncePerTake() {
        let changed = UserWatchHub.ChangedUsers()
        #expect(!changed.note(["nobody-watches"]))
        #expect(changed.take().isEmpty)

        changed.watch(["ada", "bob"])
        #expect(changed.note(["ada"]), "the first change wakes the hub")
        #expect(!changed.note(["bob"]), "a wake-up is already on its way")
        #expect(!changed.note(["carol"]))
        #expect(changed.take() == ["ada", "bob"])
        #expect(changed.take().isEmpty)

        changed.unwatch(["ada"])
        #expect(!changed.note(["ada"]))
        #expect(changed.note(["bob"]))
        #expect(changed.take() == ["bob"])
    }

    /// A read that failed marks its users again; the next event must wake the hub, or they
    /// (and every later change) would wait for a reload.
    @Test func usersMarkedAfterAFailedReadAreReadWithTheNextEvent() {
        let changed = UserWatchHub.ChangedUsers()
        changed.watch(["ada", "bob"])
        #expect(changed.note(["ada"]))
        let taken = changed.take()
        changed.mark(taken)
        #expect(changed.note(["bob"]))
        #expect(changed.take() == ["ada", "bob"])
    }
}
